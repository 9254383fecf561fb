// Gemma 4 text decoder, written once against the Backend interface. Read top to bottom:
// embedding and per-layer embeddings, then per layer the attention block (its own head size,
// K=V on some full layers, no K/V of its own on KV-shared layers), the GeGLU block (beside it the
// routed experts on mixture-of-experts models, moe.ts), the per-layer input and the layer scalar,
// then the final norm, the tied LM head and the logit softcap.
//
// Differences from Gemma 3 worth knowing: norm weights are plain multipliers (no 1 + w); V gets a
// weightless RMS norm; attention scores are not scaled (scale 1); full layers use proportional
// RoPE over their larger head; the per-layer embedding table stays on disk (rows are read for the
// tokens being processed).
import type { Backend, MatmulJob, Matrix, RopeTable } from '../../backend/backend.js';
import { makeRopeTable } from '../../backend/backend.js';
import type { Gemma4Config, Gemma4Layer } from '../config-types.js';
import type { KVCache } from '../../runtime/kv-cache.js';
import { assertFinite, checkTensorShapes } from '../../model/checks.js';
import {
  embedScaleFor, gatherSegments, headLogits,
  type ActivationPoint, type CacheLayerSpec, type CausalLM, type ForwardOptions, type Segment, type WeightSource,
} from '../../model/forward.js';
import type { RowReader } from '../../io/row-reader.js';
import { dequantize } from '../../backend/reference/index.js';
import { gemma4Tensors, PLE_TABLE } from './tensors.js';
import { ownsLmHead } from '../gemma3/tensors.js';
import { moeForward, moeScratch, prepareExperts, type MoeWeights } from './moe.js';
import { LoraPass } from '../../adapters/apply.js';

interface Layer extends Gemma4Layer {
  inputNorm: Float32Array;
  q: Matrix;
  /** Null on KV-shared layers. */
  k: Matrix | null;
  /** Null on KV-shared layers and on K=V layers (V is the raw K projection). */
  v: Matrix | null;
  o: Matrix;
  qNorm: Float32Array;
  kNorm: Float32Array | null;
  postAttnNorm: Float32Array;
  preFfnNorm: Float32Array;
  gate: Matrix;
  up: Matrix;
  down: Matrix;
  postFfnNorm: Float32Array;
  /** The routed experts beside the dense MLP; null on dense models. */
  moe: MoeWeights | null;
  /** Per-layer input: gate [P, H], projection [H, P], post-norm [H]; null without PLE. */
  ple: { gate: Matrix; proj: Matrix; postNorm: Float32Array } | null;
  scalar: number;
}

/** Per layer: its own kv heads × head size, a ring on sliding layers, and the layer whose cache it reads. */
export function gemma4CacheLayout(cfg: Gemma4Config): CacheLayerSpec[] {
  return cfg.layers.map((l) => ({ kvDim: l.numKvHeads * l.headDim, window: l.sliding ? cfg.slidingWindow : 0, source: l.kvSource }));
}

/** The per-layer embedding rows of a tensor held in memory (when the source cannot read rows from disk). */
function inMemoryRows(src: WeightSource, name: string): RowReader {
  const w = src.load(name);
  const [rows, cols] = w.shape;
  const values = dequantize(w);
  return {
    name, rows, cols, format: w.format,
    read(ids, out) {
      for (let i = 0; i < ids.length; i++) out.set(values.subarray(ids[i] * cols, (ids[i] + 1) * cols), i * cols);
    },
    close() {},
  };
}

export class Gemma4Model implements CausalLM {
  readonly layers: Layer[] = [];
  readonly embed: Matrix;
  readonly lmHead: Matrix;
  readonly finalNorm: Float32Array;
  readonly embedScale: number;
  readonly vocabSize: number;
  readonly numLayers: number;
  readonly cacheLayout: CacheLayerSpec[];
  /** Per-layer embeddings: the on-disk table, the projection of the main embedding and its norm; null without PLE. */
  readonly ple: { table: RowReader; proj: Matrix; norm: Float32Array } | null = null;
  readonly diskTables: readonly string[];
  private readonly ropeLocal: RopeTable;
  private readonly ropeGlobal: RopeTable;
  /** Gains of 1 for V's weightless norm, per head size. */
  private readonly ones = new Map<number, Float32Array>();
  /** Layers whose keys and values later KV-shared layers read. */
  private readonly sharedSources: Set<number>;
  /** Told every mixture-of-experts layer's choice: experts[t·k + j] is row t's j-th expert (diagnostics, tests). */
  onRoute: ((layer: number, experts: Int32Array, T: number) => void) | null = null;

  /**
   * Every tensor's shape is checked against the config before any weight is read; each weight is
   * scanned for NaN/Inf as it is read unless `checks.weights` is false. The per-layer embedding
   * table is opened for row reads, not loaded.
   */
  constructor(
    readonly cfg: Gemma4Config,
    readonly backend: Backend,
    src: WeightSource,
    checks: { weights?: boolean } = {},
  ) {
    const { hiddenSize: H, numHeads: nH, hiddenSizePerLayerInput: P } = cfg;
    checkTensorShapes(gemma4Tensors(cfg, src), src);
    this.numLayers = cfg.numLayers;
    this.diskTables = P > 0 ? [PLE_TABLE] : [];
    this.cacheLayout = gemma4CacheLayout(cfg);
    const scan = checks.weights !== false;
    const load = (name: string, shape: number[]) => (scan ? assertFinite(src.load(name, shape)) : src.load(name, shape));
    // Gemma 4 stores norm gains as the multipliers themselves.
    const norm = (name: string, dim: number) => backend.vector(load(name, [dim]));
    const mat = (name: string, rows: number, cols: number) => backend.prepare(load(name, [rows, cols]));

    const embedW = load('model.embed_tokens.weight', [cfg.vocabSize, H]);
    this.embedScale = src.embedScale ?? embedScaleFor(H, embedW.format.kind);
    this.embed = backend.prepare(embedW);
    this.vocabSize = this.embed.rows;
    this.lmHead = ownsLmHead(cfg, src) ? mat('lm_head.weight', cfg.vocabSize, H) : this.embed;
    if (P > 0) {
      const table = src.rowReader ? src.rowReader(PLE_TABLE) : inMemoryRows(src, PLE_TABLE);
      this.ple = { table, proj: mat('model.per_layer_model_projection.weight', cfg.numLayers * P, H), norm: norm('model.per_layer_projection_norm.weight', P) };
    }

    cfg.layers.forEach((shape, l) => {
      const p = `model.layers.${l}.`;
      const D = shape.headDim;
      const own = shape.kvSource === l;
      const kvRows = shape.numKvHeads * D;
      const I = shape.intermediateSize;
      this.layers.push({
        ...shape,
        inputNorm: norm(p + 'input_layernorm.weight', H),
        q: mat(p + 'self_attn.q_proj.weight', nH * D, H),
        k: own ? mat(p + 'self_attn.k_proj.weight', kvRows, H) : null,
        v: own && !shape.kEqV ? mat(p + 'self_attn.v_proj.weight', kvRows, H) : null,
        kNorm: own ? norm(p + 'self_attn.k_norm.weight', D) : null,
        qNorm: norm(p + 'self_attn.q_norm.weight', D),
        o: mat(p + 'self_attn.o_proj.weight', H, nH * D),
        postAttnNorm: norm(p + 'post_attention_layernorm.weight', H),
        preFfnNorm: norm(p + 'pre_feedforward_layernorm.weight', H),
        gate: mat(p + 'mlp.gate_proj.weight', I, H),
        up: mat(p + 'mlp.up_proj.weight', I, H),
        down: mat(p + 'mlp.down_proj.weight', H, I),
        postFfnNorm: norm(p + 'post_feedforward_layernorm.weight', H),
        moe: cfg.enableMoeBlock ? this.loadMoe(p, load, norm, mat) : null,
        ple: P > 0
          ? { gate: mat(p + 'per_layer_input_gate.weight', P, H), proj: mat(p + 'per_layer_projection.weight', H, P), postNorm: norm(p + 'post_per_layer_input_norm.weight', H) }
          : null,
        scalar: backend.vector(load(p + 'layer_scalar', [1]))[0],
      });
    });
    this.finalNorm = norm('model.norm.weight', H);
    this.ropeLocal = makeRopeTable(cfg.ropeLocal.theta, cfg.headDim, cfg.ropeLocal.linearFactor, cfg.ropeLocal.rotaryFraction);
    this.ropeGlobal = makeRopeTable(cfg.ropeGlobal.theta, cfg.globalHeadDim, cfg.ropeGlobal.linearFactor, cfg.ropeGlobal.rotaryFraction);
    for (const D of new Set(cfg.layers.map((l) => l.headDim))) this.ones.set(D, backend.alloc(D).fill(1));
    this.sharedSources = new Set(cfg.layers.filter((l, i) => l.kvSource !== i).map((l) => l.kvSource));
  }

  /** Layer p's router, expert scales, extra norms and the stacked experts split per expert. */
  private loadMoe(
    p: string,
    load: (name: string, shape: number[]) => ReturnType<WeightSource['load']>,
    norm: (name: string, dim: number) => Float32Array,
    mat: (name: string, rows: number, cols: number) => Matrix,
  ): MoeWeights {
    const { hiddenSize: H } = this.cfg;
    const E = this.cfg.numExperts!, F = this.cfg.moeIntermediateSize!;
    const routerGain = norm(p + 'router.scale', H);
    for (let i = 0; i < H; i++) routerGain[i] *= 1 / Math.sqrt(H);
    return {
      numExperts: E,
      topK: this.cfg.topKExperts!,
      width: F,
      router: mat(p + 'router.proj.weight', E, H),
      routerGain,
      expertScale: norm(p + 'router.per_expert_scale', E),
      preNorm2: norm(p + 'pre_feedforward_layernorm_2.weight', H),
      postNorm1: norm(p + 'post_feedforward_layernorm_1.weight', H),
      postNorm2: norm(p + 'post_feedforward_layernorm_2.weight', H),
      ...prepareExperts(this.backend, load(p + 'experts.gate_up_proj', [E, 2 * F, H]), load(p + 'experts.down_proj', [E, H, F]), E, F, H),
    };
  }

  get separateHead(): boolean {
    return this.lmHead !== this.embed;
  }

  close(): void {
    this.ple?.table.close();
  }

  /** q and k are RMS-normed per head: the product is not scaled. */
  attentionScale(): number {
    return 1;
  }

  forward(ids: ArrayLike<number>, pos0: number, cache: KVCache, opts: ForwardOptions): Float32Array | null {
    return this.forwardSegments([{ ids, pos0, cache, lora: opts.lora }], opts);
  }

  /**
   * Matmuls, norms, GeGLU and adds run over the rows of all segments at once; RoPE, attention and
   * the cache write run per segment, against its own cache and positions. A KV-shared layer
   * attends over its source layer's cache and this pass's keys and values of the source layer.
   */
  forwardSegments(segments: readonly Segment[], opts: ForwardOptions): Float32Array | null {
    const { cfg, backend: B } = this;
    const { hiddenSize: H, numHeads: nH, rmsNormEps: eps, hiddenSizePerLayerInput: P, numLayers: L } = cfg;
    const watch = opts.observer;
    const { ids, rowOf } = gatherSegments(segments, watch);
    const T = ids.length;
    const pos0 = segments[0].pos0;
    const maxD = Math.max(cfg.headDim, cfg.globalHeadDim);
    const maxI = Math.max(...this.layers.map((l) => l.intermediateSize));

    B.resetScratch();
    const lora = LoraPass.of(B, segments, rowOf);
    const h = B.scratch(T * H);
    const x = B.scratch(T * H);
    const q = B.scratch(T * nH * maxD);
    const att = B.scratch(T * nH * maxD);
    const gate = B.scratch(T * maxI);
    const up = B.scratch(T * maxI);
    const maxKv = Math.max(...this.cacheLayout.map((c) => c.kvDim));
    const kvScratch = { k: B.scratch(T * maxKv), v: B.scratch(T * maxKv) };
    // Keys and values of this pass, per layer that owns a cache (KV-shared layers read their source's).
    const kvOf = new Map<number, { k: Float32Array; v: Float32Array }>();
    const rows = (a: Float32Array, r0: number, n: number, cols: number) => (segments.length === 1 ? a : a.subarray(r0 * cols, (r0 + n) * cols));

    B.embed(this.embed, ids, this.embedScale, h);
    watch?.(0, 'embed', h, T, H, pos0);
    const pleIn = this.ple ? this.perLayerInputs(ids, h, pos0, opts) : null;
    const pleSlice = P > 0 ? B.scratch(T * P) : null;
    const pleGate = P > 0 ? B.scratch(T * P) : null;
    const moeLayer = this.layers.find((Ly) => Ly.moe);
    const moeBufs = moeLayer ? { s: moeScratch(B, moeLayer.moe!, T, H), out: B.scratch(T * H) } : null;

    for (let l = 0; l < L; l++) {
      const Ly = this.layers[l];
      const p = `model.layers.${l}.`; // adapted matrices are named as in the checkpoint
      const D = Ly.headDim;
      const nKV = Ly.numKvHeads;
      const qDim = nH * D;
      const kvDim = nKV * D;
      const I = Ly.intermediateSize;
      const seen = watch && ((point: ActivationPoint, data: Float32Array, cols: number) => watch(l, point, data, T, cols, pos0));
      const rope = Ly.sliding ? this.ropeLocal : this.ropeGlobal;
      // --- attention block ---
      B.rmsNorm(h, T, H, Ly.inputNorm, eps, x);
      seen?.('attn_norm', x, H);
      const qv = q.subarray(0, T * qDim);
      // A layer that owns its cache projects K and V (one backend pass with Q); one that later
      // layers share keeps its own buffers for the rest of the pass.
      const own =
        Ly.kvSource !== l ? null
        : this.sharedSources.has(l) ? { k: B.scratch(T * kvDim), v: B.scratch(T * kvDim) }
        : { k: kvScratch.k.subarray(0, T * kvDim), v: kvScratch.v.subarray(0, T * kvDim) };
      const jobs: MatmulJob[] = [{ x, T, w: Ly.q, out: qv }];
      if (own) jobs.push({ x, T, w: Ly.k!, out: own.k });
      if (own && Ly.v) jobs.push({ x, T, w: Ly.v, out: own.v });
      B.matmuls(jobs);
      lora?.apply(p + 'self_attn.q_proj.weight', x, H, qv, qDim);
      seen?.('q_proj', qv, qDim);
      B.rmsNorm(qv, T * nH, D, Ly.qNorm, eps, qv);
      segments.forEach((s, i) => B.rope(rows(qv, rowOf[i], s.ids.length, qDim), s.ids.length, nH, D, s.pos0, rope));
      seen?.('q_rope', qv, qDim);
      if (own) {
        const { k, v } = own;
        lora?.apply(p + 'self_attn.k_proj.weight', x, H, k, kvDim);
        seen?.('k_proj', k, kvDim);
        // K=V layers: V is the raw K projection, before k_norm and RoPE.
        if (Ly.v) lora?.apply(p + 'self_attn.v_proj.weight', x, H, v, kvDim);
        else v.set(k);
        seen?.('v_proj', v, kvDim);
        B.rmsNorm(v, T * nKV, D, this.ones.get(D)!, eps, v);
        seen?.('v_norm', v, kvDim);
        B.rmsNorm(k, T * nKV, D, Ly.kNorm!, eps, k);
        segments.forEach((s, i) => B.rope(rows(k, rowOf[i], s.ids.length, kvDim), s.ids.length, nKV, D, s.pos0, rope));
        seen?.('k_rope', k, kvDim);
        kvOf.set(l, { k, v });
      }
      const { k, v } = kvOf.get(Ly.kvSource)!;
      const attv = att.subarray(0, T * qDim);
      segments.forEach((s, i) => {
        const n = s.ids.length;
        const sk = rows(k, rowOf[i], n, kvDim), sv = rows(v, rowOf[i], n, kvDim);
        s.cache.matchPrecision(sk, B); // shared layers meet these rows already rounded
        s.cache.matchPrecision(sv, B);
        B.attention({
          q: rows(qv, rowOf[i], n, qDim), k: sk, v: sv,
          cache: s.cache.layers[Ly.kvSource], pos0: s.pos0, T: n,
          numHeads: nH, numKvHeads: nKV, headDim: D, scale: this.attentionScale(),
          window: Ly.sliding ? cfg.slidingWindow : 0, qChunk: opts.qChunk, out: rows(attv, rowOf[i], n, qDim),
        });
      });
      // A ring cache may overwrite keys this pass's early queries still need: a layer that later
      // layers share writes its cache only after they have run.
      if (Ly.kvSource === l && !this.sharedSources.has(l)) this.writeCache(segments, rowOf, l, k, v);
      seen?.('attn', attv, qDim);
      B.matmul(attv, T, Ly.o, x);
      lora?.apply(p + 'self_attn.o_proj.weight', attv, qDim, x, H);
      seen?.('attn_out', x, H);
      B.rmsNorm(x, T, H, Ly.postAttnNorm, eps, x);
      seen?.('attn_post', x, H);
      B.add(h, x, T * H);
      seen?.('residual_mid', h, H);
      // --- MLP block ---
      const g = gate.subarray(0, T * I);
      const u = up.subarray(0, T * I);
      B.rmsNorm(h, T, H, Ly.preFfnNorm, eps, x);
      seen?.('ffn_norm', x, H);
      B.matmuls([{ x, T, w: Ly.gate, out: g }, { x, T, w: Ly.up, out: u }]);
      lora?.apply(p + 'mlp.gate_proj.weight', x, H, g, I);
      seen?.('gate', g, I);
      lora?.apply(p + 'mlp.up_proj.weight', x, H, u, I);
      seen?.('up', u, I);
      B.geluMul(g, u, T * I, g);
      seen?.('mlp_act', g, I);
      B.matmul(g, T, Ly.down, x);
      lora?.apply(p + 'mlp.down_proj.weight', g, I, x, H);
      seen?.('ffn_out', x, H);
      if (Ly.moe && moeBufs) {
        // Dense and routed branches, each normed, summed, then normed again. The router reads h,
        // the residual after attention.
        B.rmsNorm(x, T, H, Ly.moe.postNorm1, eps, x);
        const { experts } = moeForward(B, Ly.moe, h, T, H, eps, moeBufs.s, moeBufs.out);
        this.onRoute?.(l, experts, T);
        seen?.('moe_out', moeBufs.out, H);
        B.add(x, moeBufs.out, T * H);
      }
      B.rmsNorm(x, T, H, Ly.postFfnNorm, eps, x);
      seen?.('ffn_post', x, H);
      B.add(h, x, T * H);
      // --- per-layer input ---
      if (Ly.ple && pleIn && pleSlice && pleGate) {
        seen?.('residual_ffn', h, H);
        const pg = pleGate;
        B.matmul(h, T, Ly.ple.gate, pg);
        for (let t = 0; t < T; t++) pleSlice.set(pleIn.subarray(t * L * P + l * P, t * L * P + (l + 1) * P), t * P);
        B.geluMul(pg, pleSlice, T * P, pg);
        seen?.('ple_gate', pg, P);
        B.matmul(pg, T, Ly.ple.proj, x);
        seen?.('ple_proj', x, H);
        B.rmsNorm(x, T, H, Ly.ple.postNorm, eps, x);
        seen?.('ple_post', x, H);
        B.add(h, x, T * H);
      }
      B.scale(h, T * H, Ly.scalar);
      seen?.('residual', h, H);
    }
    for (const l of this.sharedSources) this.writeCache(segments, rowOf, l, kvOf.get(l)!.k, kvOf.get(l)!.v);
    for (const s of segments) s.cache.length = s.pos0 + s.ids.length;
    return headLogits(this, h, segments, rowOf, opts);
  }

  /** Store layer l's keys and values of this pass in each segment's cache. */
  private writeCache(segments: readonly Segment[], rowOf: number[], l: number, k: Float32Array, v: Float32Array): void {
    const d = this.cacheLayout[l].kvDim;
    segments.forEach((s, i) => {
      const n = s.ids.length;
      const at = segments.length === 1 ? 0 : rowOf[i] * d;
      s.cache.write(l, k.subarray(at, at + n * d), v.subarray(at, at + n * d), s.pos0, n);
    });
  }

  /**
   * The per-layer inputs of every row, [T, L·P]: the table rows of the tokens (read from disk) ×
   * sqrt(P), plus the main embedding projected to L·P, × H^-1/2 and RMS-normed per P-slice; the
   * sum × 2^-1/2. Row t's slice l goes to layer l.
   */
  private perLayerInputs(ids: number[], h0: Float32Array, pos0: number, opts: ForwardOptions): Float32Array {
    const { backend: B, cfg } = this;
    const ple = this.ple!;
    const T = ids.length;
    const P = cfg.hiddenSizePerLayerInput;
    const LP = cfg.numLayers * P;
    const tok = B.scratch(T * LP);
    ple.table.read(ids, tok);
    B.scale(tok, T * LP, embedScaleFor(P, ple.table.format.kind));
    const proj = B.scratch(T * LP);
    B.matmul(h0, T, ple.proj, proj);
    B.scale(proj, T * LP, 1 / Math.sqrt(cfg.hiddenSize));
    B.rmsNorm(proj, T * cfg.numLayers, P, ple.norm, cfg.rmsNormEps, proj);
    B.add(proj, tok, T * LP);
    B.scale(proj, T * LP, Math.SQRT1_2);
    opts.observer?.(0, 'ple_input', proj, T, LP, pos0);
    return proj;
  }
}
