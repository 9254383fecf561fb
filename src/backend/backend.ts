// The Backend interface: every numeric kernel the models need. Each architecture's forward pass
// (src/arch/*/model.ts) is written once against it; the reference backend is the oracle, faster backends (WASM SIMD on
// worker threads) and quantized weight formats slot in behind it.
//
// Activations are Float32Array, row-major [rows, cols], allocated by the backend (a WASM backend
// hands out views into its shared memory). Weights are opaque Matrix handles made by prepare().
import type { WeightFormat, WeightTensor } from '../model/weight.js';
import { f16ArrayToF32 } from '../util/half.js';

export interface Matrix {
  readonly name: string;
  /** Output features (rows of the [out, in] weight). */
  readonly rows: number;
  /** Input features. */
  readonly cols: number;
}

/** How a KV cache stores its values: f32, or IEEE halves (two to a Float32Array element). */
export type KvType = 'f32' | 'f16';
export const kvTypes: readonly KvType[] = ['f32', 'f16'];

/** One layer's KV cache. Keys are stored post-RoPE. Position p lives in slot p % capacity when ring. */
export interface LayerCache {
  /** Storage from alloc(): capacity · numKvHeads · headDim values of `type` (f16: packed two to an element). */
  k: Float32Array;
  v: Float32Array;
  /** Slots; each slot holds numKvHeads * headDim values. */
  capacity: number;
  ring: boolean;
  /** Absent: f32. */
  type?: KvType;
}

export interface AttentionArgs {
  /** [T, numHeads * headDim], post-norm, post-RoPE. */
  q: Float32Array;
  /** This batch's keys and values, [T, numKvHeads * headDim]; not yet in the cache. */
  k: Float32Array;
  v: Float32Array;
  /** Keys/values of positions before pos0. */
  cache: LayerCache;
  /** Position of the first query (= number of tokens already in the cache). */
  pos0: number;
  T: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  scale: number;
  /** Sliding window W (a query at q sees keys q-W+1..q), or 0 for full causal attention. */
  window: number;
  /** Queries processed per chunk against the whole visible key range. */
  qChunk: number;
  /** [T, numHeads * headDim] */
  out: Float32Array;
}

/**
 * For one attention call: where the key/value of absolute position p lives, this batch's k/v
 * (p ≥ pos0) or the cache (slot p % capacity when ring), as [keys, values, offset of the row]. An
 * f16 cache is widened to f32 once, here (the plain-code backends' way to read it).
 */
export function keyValueRows(a: AttentionArgs): (p: number) => [Float32Array, Float32Array, number] {
  const kvDim = a.numKvHeads * a.headDim;
  const c = a.cache;
  // Only the slots that can hold this call's older keys: all of a ring, the first pos0 of a full history.
  const used = (c.ring ? c.capacity : Math.min(c.capacity, a.pos0)) * kvDim;
  const wide = (x: Float32Array) => (c.type === 'f16' ? f16ArrayToF32(new Uint16Array(x.buffer, x.byteOffset, used)) : x);
  const ck = wide(c.k), cv = wide(c.v);
  return (p) => (p >= a.pos0 ? [a.k, a.v, (p - a.pos0) * kvDim] : [ck, cv, (c.ring ? p % c.capacity : p) * kvDim]);
}

/** One matmul of a matmuls() call: out[T, w.rows] = x[T, w.cols] · wᵀ. */
export interface MatmulJob {
  x: Float32Array;
  T: number;
  w: Matrix;
  out: Float32Array;
}

export interface RopeTable {
  /** Inverse frequencies, headDim/2 entries, already divided by any linear scaling factor. */
  invFreq: Float32Array;
}

export interface Backend {
  readonly name: string;
  /** Long-lived activation memory (KV caches), zeroed. */
  alloc(n: number): Float32Array;
  /** Give back memory from alloc() (a dropped session's KV cache); the array must not be used after. */
  free?(a: Float32Array): void;
  /** Per-forward working memory, valid until the next resetScratch(). */
  scratch(n: number): Float32Array;
  /** Called at the start of every forward pass: all scratch buffers may be reused. */
  resetScratch(): void;
  /** Take ownership of a 2-D weight; the caller must drop its own reference to the bytes. */
  prepare(w: WeightTensor): Matrix;
  /** The format prepare() holds a weight of format f in, when it is not f itself (memory and bandwidth figures). */
  heldFormat?(f: WeightFormat): WeightFormat;
  /** A 1-D weight (norm gains) as f32. */
  vector(w: WeightTensor): Float32Array;
  /** out[T, w.rows] = x[T, w.cols] · wᵀ */
  matmul(x: Float32Array, T: number, w: Matrix, out: Float32Array): void;
  /**
   * Independent matmuls, with the results of running them one by one: no job's out may overlap
   * another's x or out. Jobs may share an input (the wasm backend then quantizes it once) and run
   * in one pass over the worker pool instead of one each, which is what a decode step's many small
   * matmuls (q/k/v, gate/up, a token's chosen experts) need.
   */
  matmuls(jobs: readonly MatmulJob[]): void;
  /** out[i] = table row ids[i] × scale */
  embed(table: Matrix, ids: ArrayLike<number>, scale: number, out: Float32Array): void;
  /** Gemma RMSNorm over rows of `dim`: x / sqrt(mean(x²) + eps) × gain (gain already 1 + w). out may be x. */
  rmsNorm(x: Float32Array, rows: number, dim: number, gain: Float32Array, eps: number, out: Float32Array): void;
  /** Rotate-half RoPE in place on [T, heads, headDim] for positions pos0..pos0+T-1. */
  rope(x: Float32Array, T: number, heads: number, headDim: number, pos0: number, table: RopeTable): void;
  attention(a: AttentionArgs): void;
  /** out = gelu_tanh(gate) × up, elementwise over n. out may alias gate. */
  geluMul(gate: Float32Array, up: Float32Array, n: number, out: Float32Array): void;
  /** acc += x over n. */
  add(acc: Float32Array, x: Float32Array, n: number): void;
  /**
   * Optional fast path for the final logit softcap: x = cap·tanh(x/cap) over n, as the reference
   * computes it (f64, one f32 rounding). Without it the caller runs that loop itself.
   */
  softcap?(x: Float32Array, n: number, cap: number): void;
  /**
   * acc[T, n] += x[T, k] · w[k, n], with w a plain f32 array from alloc() (row-major): a LoRA
   * up-projection (w = Bᵀ, k its rank), short rows that a matmul of [n, k] would run poorly.
   */
  addProduct(acc: Float32Array, x: Float32Array, T: number, k: number, w: Float32Array, n: number): void;
  /** x *= s over n, s taken as f32 (Gemma 4's layer scalar and per-layer-input scales). */
  scale(x: Float32Array, n: number, s: number): void;
  /**
   * Optional fast path for fp16 numerics (src/fp16/backend.ts): round x[0..n) to the nearest fp16
   * value in place, returning the index of the first non-finite result or -1. Must be
   * bit-identical to src/fp16/round.ts.
   */
  roundToF16?(x: Float32Array, n: number): number;
  /**
   * Optional fast path for the session's logit check: the index of the first non-finite value of
   * x[0..n), or −1 (x an array of this backend's). Without it the session scans in JavaScript.
   */
  firstNonFinite?(x: Float32Array, n: number): number;
  /** Resolves once the backend's threads are up (a browser starts them only while its caller awaits). */
  ready?(): Promise<void>;
  /** Release worker threads or memory. */
  dispose?(): void;
}

/**
 * HF's inverse frequencies in float32: 1 / theta^(2j/D), divided by the linear factor. With a
 * rotary fraction below 1 (Gemma 4's proportional RoPE) only the first floor(fraction·D/2) pairs
 * turn; the others get frequency 0 (cos 1, sin 0), and the exponent keeps the whole head D.
 */
export function makeRopeTable(theta: number, headDim: number, linearFactor: number, rotaryFraction = 1): RopeTable {
  const half = headDim / 2;
  const invFreq = new Float32Array(half);
  const turning = Math.floor((rotaryFraction * headDim) / 2);
  for (let j = 0; j < turning; j++) {
    const exponent = Math.fround((2 * j) / headDim);
    invFreq[j] = Math.fround(Math.fround(1 / Math.fround(theta ** exponent)) / linearFactor);
  }
  return { invFreq };
}
