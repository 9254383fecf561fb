// What every architecture's forward pass shares: where weights come from, the activation points
// an observer can watch, the segments of a pass, and the loaded model's interface.
import type { Backend, Matrix } from '../backend/backend.js';
import type { ModelConfig } from '../arch/config-types.js';
import type { WeightFormat, WeightTensor } from './weight.js';
import type { KVCache } from '../runtime/kv-cache.js';
import type { RowReader } from '../io/row-reader.js';
import { f32ToBf16Bits, bf16BitsToF32, f32ToF16Bits, f16BitsToF32 } from '../util/half.js';
import type { PreparedLora } from '../adapters/apply.js';

/** Where tensors come from: a checkpoint, a lutra package or a GGUF file. */
export interface WeightSource {
  readonly dir: string;
  readonly config: ModelConfig;
  has(name: string): boolean;
  readonly rawConfig: Record<string, unknown>;
  names(): string[];
  shape(name: string): number[];
  format(name: string): WeightFormat;
  load(name: string, expectedShape?: number[]): WeightTensor;
  /** Embedding scale recorded by a package (e.g. with an fp16 α folded in); undefined for checkpoints. */
  embedScale?: number;
  /** The numerics a package was built for (meta.yaml), e.g. "fp16"; undefined for checkpoints. */
  numerics?: string;
  /** A package stores lm_head.weight only when its format differs from the embedding's: then use it. */
  separateLmHead?: boolean;
  /** The file that holds (or would hold) a tensor, for error messages; the folder when not given. */
  where?(name: string): string;
  /** Reads chosen rows of a 2-D tensor from its file on demand; the reader outlives the source. */
  rowReader?(name: string): RowReader;
  close(): void;
}

/**
 * Activation points an observer can watch, one after every op of the forward pass (per-layer
 * cosine, the fp16 audit, fp16 overflow detection). The ple_* points, v_norm, moe_out and
 * residual_ffn exist only in architectures that have the op (Gemma 4); `residual` is always the stream leaving a layer.
 */
export const ACTIVATION_POINTS = {
  embed: 'embedding lookup × scale (the residual stream entering layer 0)',
  attn_norm: 'input_layernorm output',
  q_proj: 'q_proj matmul',
  k_proj: 'k_proj matmul',
  v_proj: 'v_proj matmul',
  q_rope: 'query after q_norm and RoPE',
  k_rope: 'key after k_norm and RoPE',
  attn: 'attention (softmax(q·kᵀ)·v) output',
  attn_out: 'o_proj matmul (attention block output before its post-norm)',
  attn_post: 'post_attention_layernorm output',
  residual_mid: 'residual add after attention',
  ffn_norm: 'pre_feedforward_layernorm output',
  gate: 'gate_proj matmul',
  up: 'up_proj matmul',
  mlp_act: 'gelu(gate) · up (the MLP intermediate)',
  ffn_out: 'down_proj matmul (feed-forward output before its post-norm)',
  moe_out: 'routed experts: weighted sum of the chosen experts after post_feedforward_layernorm_2 (mixture-of-experts layers)',
  ffn_post: 'post_feedforward_layernorm output',
  residual: 'residual add after feed-forward (the stream leaving the layer)',
  ple_input: 'per-layer embedding inputs (token rows and projected stream, normed and mixed)',
  v_norm: 'value after its weightless RMS norm',
  residual_ffn: 'residual add after feed-forward, before the per-layer input and layer scalar',
  ple_gate: 'gelu(per_layer_input_gate) · per-layer input',
  ple_proj: 'per_layer_projection matmul',
  ple_post: 'post_per_layer_input_norm output',
  final_norm: 'final norm output',
  logits: 'LM head matmul (logits)',
} as const;

export type ActivationPoint = keyof typeof ACTIVATION_POINTS;

/**
 * Called after each op with its output: `rows` rows of `cols` values, row i at position pos0 + i.
 * `data` is live engine memory, valid only during the call.
 */
export type Observer = (layer: number, point: ActivationPoint, data: Float32Array, rows: number, cols: number, pos0: number) => void;

/** Tokens of one sequence in a forward pass: positions pos0..pos0+ids.length-1 against its own cache. */
export interface Segment {
  ids: ArrayLike<number>;
  pos0: number;
  cache: KVCache;
  /** LoRA adapters applied (unmerged) to this segment's rows, or none. */
  lora?: PreparedLora | null;
}

export interface ForwardOptions {
  /** Which positions get logits: none, the last one, or every one. */
  logits: 'none' | 'last' | 'all';
  qChunk: number;
  observer?: Observer;
  /** LoRA adapters for forward()'s one segment (forwardSegments takes them per segment). */
  lora?: PreparedLora | null;
}

/** One layer's KV cache as an architecture lays it out. */
export interface CacheLayerSpec {
  /** Values per cached position: KV heads × head size. */
  kvDim: number;
  /** Sliding window W (a ring of W slots is enough), or 0 for full causal attention. */
  window: number;
  /** The layer whose cache this layer reads: itself, or an earlier layer it shares K/V with. */
  source: number;
}

/** A loaded causal language model, whatever its architecture. */
export interface CausalLM {
  readonly cfg: ModelConfig;
  readonly backend: Backend;
  readonly vocabSize: number;
  readonly numLayers: number;
  /** Per layer: how its KV cache is laid out (sessions size their caches from it). */
  readonly cacheLayout: readonly CacheLayerSpec[];
  /** Whether the LM head is its own matrix rather than the tied embedding. */
  readonly separateHead: boolean;
  /** Tensors read row by row from their file and never held in memory (Gemma 4's per-layer embeddings). */
  readonly diskTables?: readonly string[];
  /**
   * Run T tokens at positions pos0..pos0+T-1 against `cache` (which holds positions < pos0),
   * append their keys/values, and return logits [rows, vocab] for the requested positions.
   * The logits live in backend scratch memory: valid until the next forward call.
   */
  forward(ids: ArrayLike<number>, pos0: number, cache: KVCache, opts: ForwardOptions): Float32Array | null;
  /**
   * One pass over the rows of several segments (e.g. one decode token of each of several
   * sessions): every weight is read once for the lot; RoPE, attention and the cache write run per
   * segment. Logits come in segment order: the last row of each segment or every row.
   */
  forwardSegments(segments: readonly Segment[], opts: ForwardOptions): Float32Array | null;
  /** The factor on q·k before the softmax in `layer` (query_pre_attn_scalar^-1/2 in Gemma 3; 1 in Gemma 4, whose q and k are normed). */
  attentionScale(layer: number): number;
  /** Release what the model holds outside the backend (open files); the backend is the caller's. */
  close?(): void;
}

/** sqrt(H) cast to the embedding's storage dtype, as HF does. */
export function embedScaleFor(hidden: number, kind: string): number {
  const s = Math.sqrt(hidden);
  if (kind === 'bf16') return bf16BitsToF32(f32ToBf16Bits(s));
  if (kind === 'f16') return f16BitsToF32(f32ToF16Bits(s));
  return Math.fround(s);
}

/** Gathers the segments' ids into one row list; rowOf[i] is segment i's first row. */
export function gatherSegments(segments: readonly Segment[], observer: Observer | undefined): { ids: number[]; rowOf: number[] } {
  if (segments.length === 0) throw new Error('forwardSegments: no segments');
  if (observer && segments.length > 1) throw new Error('forwardSegments: an observer watches one segment at a time');
  const ids: number[] = [];
  const rowOf: number[] = [];
  for (const s of segments) {
    if (s.ids.length === 0) throw new Error('forwardSegments: a segment has no tokens');
    rowOf.push(ids.length);
    for (let i = 0; i < s.ids.length; i++) ids.push(s.ids[i]);
  }
  return { ids, rowOf };
}

/** What the logits step needs from a model: its final norm, LM head and config. */
export interface HeadWeights {
  backend: Backend;
  finalNorm: Float32Array;
  lmHead: Matrix;
  vocabSize: number;
  cfg: { hiddenSize: number; rmsNormEps: number; finalLogitSoftcapping: number | null; numLayers: number };
}

/**
 * The end of every forward pass: the rows that get logits (every row, or the last row of each
 * segment, gathered when several), the final norm, the LM head and the logit softcap. `h` is the
 * residual stream [T, H]; the observer sees the final norm and the logits as the top layer's.
 */
export function headLogits(m: HeadWeights, h: Float32Array, segments: readonly Segment[], rowOf: number[], opts: ForwardOptions): Float32Array | null {
  if (opts.logits === 'none') return null;
  const B = m.backend;
  const { hiddenSize: H, rmsNormEps: eps, finalLogitSoftcapping: cap, numLayers } = m.cfg;
  const T = h.length / H;
  let n = T;
  let last = h;
  if (opts.logits === 'last') {
    n = segments.length;
    if (n === 1) last = h.subarray((T - 1) * H, T * H);
    else {
      last = B.scratch(n * H);
      segments.forEach((s, i) => last.set(h.subarray((rowOf[i] + s.ids.length - 1) * H, (rowOf[i] + s.ids.length) * H), i * H));
    }
  }
  const firstPos = segments[0].pos0 + T - n;
  const normed = B.scratch(n * H);
  const top = numLayers - 1;
  B.rmsNorm(last, n, H, m.finalNorm, eps, normed);
  opts.observer?.(top, 'final_norm', normed, n, H, firstPos);
  const logits = B.scratch(n * m.vocabSize);
  B.matmul(normed, n, m.lmHead, logits);
  if (cap && B.softcap) B.softcap(logits, logits.length, cap);
  else if (cap) for (let i = 0; i < logits.length; i++) logits[i] = cap * Math.tanh(logits[i] / cap);
  opts.observer?.(top, 'logits', logits, n, m.vocabSize, firstPos);
  return logits;
}
