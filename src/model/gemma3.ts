// Gemma 3 text decoder, written once against the Backend
// interface. Read top to bottom: embedding, then per layer the sandwich-normed attention and
// GeGLU blocks, then the final norm and the tied LM head.
import type { Backend, Matrix, RopeTable } from '../backend/backend.js';
import { makeRopeTable } from '../backend/backend.js';
import { isSliding, type GemmaConfig } from './config.js';
import type { WeightFormat, WeightTensor } from './weight.js';
import { f32ToBf16Bits, bf16BitsToF32, f32ToF16Bits, f16BitsToF32 } from '../util/half.js';
import type { KVCache } from '../runtime/kv-cache.js';
import { assertFinite, checkTensorShapes } from './checks.js';

/** Where tensors come from: a checkpoint or a lutra package. */
export interface WeightSource {
  readonly dir: string;
  readonly config: GemmaConfig;
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
  rowReader?(name: string): import('../io/row-reader.js').RowReader;
  close(): void;
}

interface Layer {
  sliding: boolean;
  inputNorm: Float32Array;
  q: Matrix;
  k: Matrix;
  v: Matrix;
  o: Matrix;
  qNorm: Float32Array;
  kNorm: Float32Array;
  postAttnNorm: Float32Array;
  preFfnNorm: Float32Array;
  gate: Matrix;
  up: Matrix;
  down: Matrix;
  postFfnNorm: Float32Array;
}

/**
 * Activation points an observer can watch, one after every op of the forward pass (per-layer
 * cosine, the fp16 audit, fp16 overflow detection). ACTIVATION_POINTS describes each.
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
  ffn_post: 'post_feedforward_layernorm output',
  residual: 'residual add after feed-forward (the stream leaving the layer)',
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
}

export interface ForwardOptions {
  /** Which positions get logits: none, the last one, or every one. */
  logits: 'none' | 'last' | 'all';
  qChunk: number;
  observer?: Observer;
}

/** sqrt(H) cast to the embedding's storage dtype, as HF does. */
export function embedScaleFor(hidden: number, kind: string): number {
  const s = Math.sqrt(hidden);
  if (kind === 'bf16') return bf16BitsToF32(f32ToBf16Bits(s));
  if (kind === 'f16') return f16BitsToF32(f32ToF16Bits(s));
  return Math.fround(s);
}

export class Gemma3Model {
  readonly layers: Layer[] = [];
  readonly embed: Matrix;
  readonly lmHead: Matrix;
  readonly finalNorm: Float32Array;
  readonly embedScale: number;
  readonly vocabSize: number;
  readonly attnScale: number;
  private ropeLocal: RopeTable;
  private ropeGlobal: RopeTable;

  /**
   * Every tensor's shape is checked against the config before any weight is read; each weight is
   * scanned for NaN/Inf as it is read unless `checks.weights` is false.
   */
  constructor(
    readonly cfg: GemmaConfig,
    readonly backend: Backend,
    src: WeightSource,
    onTensor?: (name: string) => void,
    checks: { weights?: boolean } = {},
  ) {
    const { hiddenSize: H, intermediateSize: I, numHeads: nH, numKvHeads: nKV, headDim: D } = cfg;
    checkTensorShapes(cfg, src);
    const scan = checks.weights !== false;
    const load = (name: string, shape: number[]) => (scan ? assertFinite(src.load(name, shape)) : src.load(name, shape));
    const norm = (name: string, dim: number) => {
      onTensor?.(name);
      const w = backend.vector(load(name, [dim]));
      // Gemma 3 stores norm weights as offsets from 1; the gain is computed in f32.
      for (let i = 0; i < dim; i++) w[i] = Math.fround(1 + w[i]);
      return w;
    };
    const mat = (name: string, rows: number, cols: number) => {
      onTensor?.(name);
      return backend.prepare(load(name, [rows, cols]));
    };

    const embedName = 'model.embed_tokens.weight';
    onTensor?.(embedName);
    const embedW = load(embedName, [cfg.vocabSize, H]);
    this.embedScale = src.embedScale ?? embedScaleFor(H, embedW.format.kind);
    this.embed = backend.prepare(embedW);
    this.vocabSize = this.embed.rows;
    const ownHead = src.has('lm_head.weight') && (!cfg.tieWordEmbeddings || src.separateLmHead === true);
    this.lmHead = ownHead ? mat('lm_head.weight', cfg.vocabSize, H) : this.embed;

    for (let l = 0; l < cfg.numLayers; l++) {
      const p = `model.layers.${l}.`;
      this.layers.push({
        sliding: isSliding(cfg, l),
        inputNorm: norm(p + 'input_layernorm.weight', H),
        q: mat(p + 'self_attn.q_proj.weight', nH * D, H),
        k: mat(p + 'self_attn.k_proj.weight', nKV * D, H),
        v: mat(p + 'self_attn.v_proj.weight', nKV * D, H),
        o: mat(p + 'self_attn.o_proj.weight', H, nH * D),
        qNorm: norm(p + 'self_attn.q_norm.weight', D),
        kNorm: norm(p + 'self_attn.k_norm.weight', D),
        postAttnNorm: norm(p + 'post_attention_layernorm.weight', H),
        preFfnNorm: norm(p + 'pre_feedforward_layernorm.weight', H),
        gate: mat(p + 'mlp.gate_proj.weight', I, H),
        up: mat(p + 'mlp.up_proj.weight', I, H),
        down: mat(p + 'mlp.down_proj.weight', H, I),
        postFfnNorm: norm(p + 'post_feedforward_layernorm.weight', H),
      });
    }
    this.finalNorm = norm('model.norm.weight', H);
    this.attnScale = 1 / Math.sqrt(cfg.queryPreAttnScalar);
    this.ropeLocal = makeRopeTable(cfg.ropeLocal.theta, D, cfg.ropeLocal.linearFactor);
    this.ropeGlobal = makeRopeTable(cfg.ropeGlobal.theta, D, cfg.ropeGlobal.linearFactor);
  }

  /**
   * Run T tokens at positions pos0..pos0+T-1 against `cache` (which holds positions < pos0),
   * append their keys/values, and return logits [rows, vocab] for the requested positions.
   * The logits live in backend scratch memory: valid until the next forward call.
   */
  forward(ids: ArrayLike<number>, pos0: number, cache: KVCache, opts: ForwardOptions): Float32Array | null {
    return this.forwardSegments([{ ids, pos0, cache }], opts);
  }

  /**
   * One pass over the rows of several segments (e.g. one decode token of each of several
   * sessions): matmuls, norms, GeGLU and adds run over all rows at once, so every weight is read
   * once for the lot; RoPE, attention and the cache write run per segment, against its own cache
   * and positions. Logits come in segment order: the last row of each segment ('last', one row
   * per segment) or every row ('all'). An observer needs exactly one segment.
   */
  forwardSegments(segments: readonly Segment[], opts: ForwardOptions): Float32Array | null {
    const { cfg, backend: B } = this;
    const { hiddenSize: H, intermediateSize: I, numHeads: nH, numKvHeads: nKV, headDim: D, rmsNormEps: eps } = cfg;
    const watch = opts.observer;
    if (segments.length === 0) throw new Error('forwardSegments: no segments');
    if (watch && segments.length > 1) throw new Error('forwardSegments: an observer watches one segment at a time');
    const ids: number[] = [];
    const rowOf: number[] = []; // first row of each segment
    for (const s of segments) {
      if (s.ids.length === 0) throw new Error('forwardSegments: a segment has no tokens');
      rowOf.push(ids.length);
      for (let i = 0; i < s.ids.length; i++) ids.push(s.ids[i]);
    }
    const T = ids.length; // rows of the pass, over all segments
    const pos0 = segments[0].pos0; // what an observer reports (one segment)

    B.resetScratch();
    const h = B.scratch(T * H); // the residual stream
    const x = B.scratch(T * H); // normed input of a block, then its output
    const q = B.scratch(T * nH * D);
    const k = B.scratch(T * nKV * D);
    const v = B.scratch(T * nKV * D);
    const att = B.scratch(T * nH * D);
    const gate = B.scratch(T * I);
    const up = B.scratch(T * I);
    /** Rows r0..r0+n of a [T, cols] activation. */
    const rows = (a: Float32Array, r0: number, n: number, cols: number) => (segments.length === 1 ? a : a.subarray(r0 * cols, (r0 + n) * cols));

    B.embed(this.embed, ids, this.embedScale, h);
    watch?.(0, 'embed', h, T, H, pos0);

    for (let l = 0; l < this.layers.length; l++) {
      const L = this.layers[l];
      const seen = watch && ((point: ActivationPoint, data: Float32Array, cols: number) => watch(l, point, data, T, cols, pos0));
      // --- attention block ---
      B.rmsNorm(h, T, H, L.inputNorm, eps, x);
      seen?.('attn_norm', x, H);
      B.matmul(x, T, L.q, q);
      seen?.('q_proj', q, nH * D);
      B.matmul(x, T, L.k, k);
      seen?.('k_proj', k, nKV * D);
      B.matmul(x, T, L.v, v);
      seen?.('v_proj', v, nKV * D);
      const rope = L.sliding ? this.ropeLocal : this.ropeGlobal;
      B.rmsNorm(q, T * nH, D, L.qNorm, eps, q);
      segments.forEach((s, i) => B.rope(rows(q, rowOf[i], s.ids.length, nH * D), s.ids.length, nH, D, s.pos0, rope));
      seen?.('q_rope', q, nH * D);
      B.rmsNorm(k, T * nKV, D, L.kNorm, eps, k);
      segments.forEach((s, i) => B.rope(rows(k, rowOf[i], s.ids.length, nKV * D), s.ids.length, nKV, D, s.pos0, rope));
      seen?.('k_rope', k, nKV * D);
      segments.forEach((s, i) => {
        const n = s.ids.length;
        const sk = rows(k, rowOf[i], n, nKV * D);
        const sv = rows(v, rowOf[i], n, nKV * D);
        B.attention({
          q: rows(q, rowOf[i], n, nH * D), k: sk, v: sv, cache: s.cache.layers[l], pos0: s.pos0, T: n,
          numHeads: nH, numKvHeads: nKV, headDim: D, scale: this.attnScale,
          window: L.sliding ? cfg.slidingWindow : 0, qChunk: opts.qChunk, out: rows(att, rowOf[i], n, nH * D),
        });
        s.cache.write(l, sk, sv, s.pos0, n);
      });
      seen?.('attn', att, nH * D);
      B.matmul(att, T, L.o, x);
      seen?.('attn_out', x, H);
      B.rmsNorm(x, T, H, L.postAttnNorm, eps, x);
      seen?.('attn_post', x, H);
      B.add(h, x, T * H);
      seen?.('residual_mid', h, H);
      // --- MLP block ---
      B.rmsNorm(h, T, H, L.preFfnNorm, eps, x);
      seen?.('ffn_norm', x, H);
      B.matmul(x, T, L.gate, gate);
      seen?.('gate', gate, I);
      B.matmul(x, T, L.up, up);
      seen?.('up', up, I);
      B.geluMul(gate, up, T * I, gate);
      seen?.('mlp_act', gate, I);
      B.matmul(gate, T, L.down, x);
      seen?.('ffn_out', x, H);
      B.rmsNorm(x, T, H, L.postFfnNorm, eps, x);
      seen?.('ffn_post', x, H);
      B.add(h, x, T * H);
      seen?.('residual', h, H);
    }
    for (const s of segments) s.cache.length = s.pos0 + s.ids.length;

    if (opts.logits === 'none') return null;
    // The rows that get logits: every row, or the last row of each segment (gathered when several).
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
    const firstPos = pos0 + T - n;
    const normed = B.scratch(n * H);
    const top = this.layers.length - 1;
    B.rmsNorm(last, n, H, this.finalNorm, eps, normed);
    watch?.(top, 'final_norm', normed, n, H, firstPos);
    const logits = B.scratch(n * this.vocabSize);
    B.matmul(normed, n, this.lmHead, logits);
    if (cfg.finalLogitSoftcapping) {
      const c = cfg.finalLogitSoftcapping;
      for (let i = 0; i < logits.length; i++) logits[i] = c * Math.tanh(logits[i] / c);
    }
    watch?.(top, 'logits', logits, n, this.vocabSize, firstPos);
    return logits;
  }
}
