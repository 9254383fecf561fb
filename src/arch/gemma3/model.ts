// Gemma 3 text decoder, written once against the Backend
// interface. Read top to bottom: embedding, then per layer the sandwich-normed attention and
// GeGLU blocks, then the final norm and the tied LM head.
import type { Backend, Matrix, RopeTable } from '../../backend/backend.js';
import { makeRopeTable } from '../../backend/backend.js';
import { isSliding, type Gemma3Config } from './config.js';
import type { KVCache } from '../../runtime/kv-cache.js';
import { assertFinite, checkTensorShapes } from '../../model/checks.js';
import {
  embedScaleFor, gatherSegments, headLogits,
  type ActivationPoint, type CacheLayerSpec, type CausalLM, type ForwardOptions, type Segment, type WeightSource,
} from '../../model/forward.js';
import { gemma3Tensors, ownsLmHead } from './tensors.js';
import { LoraPass } from '../../adapters/apply.js';

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

/** Per layer: one cache of numKvHeads × headDim per position, a ring of W slots on sliding layers. */
export function gemma3CacheLayout(cfg: Gemma3Config): CacheLayerSpec[] {
  return cfg.layerTypes.map((_, l) => ({ kvDim: cfg.numKvHeads * cfg.headDim, window: isSliding(cfg, l) ? cfg.slidingWindow : 0, source: l }));
}

export class Gemma3Model implements CausalLM {
  readonly layers: Layer[] = [];
  readonly embed: Matrix;
  readonly lmHead: Matrix;
  readonly finalNorm: Float32Array;
  readonly embedScale: number;
  readonly vocabSize: number;
  readonly attnScale: number;
  readonly numLayers: number;
  readonly cacheLayout: CacheLayerSpec[];
  private ropeLocal: RopeTable;
  private ropeGlobal: RopeTable;

  /**
   * Every tensor's shape is checked against the config before any weight is read; each weight is
   * scanned for NaN/Inf as it is read unless `checks.weights` is false.
   */
  constructor(
    readonly cfg: Gemma3Config,
    readonly backend: Backend,
    src: WeightSource,
    checks: { weights?: boolean } = {},
  ) {
    const { hiddenSize: H, intermediateSize: I, numHeads: nH, numKvHeads: nKV, headDim: D } = cfg;
    checkTensorShapes(gemma3Tensors(cfg, src), src);
    this.numLayers = cfg.numLayers;
    this.cacheLayout = gemma3CacheLayout(cfg);
    const scan = checks.weights !== false;
    const load = (name: string, shape: number[]) => (scan ? assertFinite(src.load(name, shape)) : src.load(name, shape));
    const norm = (name: string, dim: number) => {
      const w = backend.vector(load(name, [dim]));
      // Gemma 3 stores norm weights as offsets from 1; the gain is computed in f32.
      for (let i = 0; i < dim; i++) w[i] = Math.fround(1 + w[i]);
      return w;
    };
    const mat = (name: string, rows: number, cols: number) => {
      return backend.prepare(load(name, [rows, cols]));
    };

    const embedName = 'model.embed_tokens.weight';
    const embedW = load(embedName, [cfg.vocabSize, H]);
    this.embedScale = src.embedScale ?? embedScaleFor(H, embedW.format.kind);
    this.embed = backend.prepare(embedW);
    this.vocabSize = this.embed.rows;
    this.lmHead = ownsLmHead(cfg, src) ? mat('lm_head.weight', cfg.vocabSize, H) : this.embed;

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

  attentionScale(): number {
    return this.attnScale;
  }

  get separateHead(): boolean {
    return this.lmHead !== this.embed;
  }

  forward(ids: ArrayLike<number>, pos0: number, cache: KVCache, opts: ForwardOptions): Float32Array | null {
    return this.forwardSegments([{ ids, pos0, cache, lora: opts.lora }], opts);
  }

  /**
   * Matmuls, norms, GeGLU and adds run over the rows of all segments at once; RoPE, attention and
   * the cache write run per segment, against its own cache and positions. An observer needs
   * exactly one segment.
   */
  forwardSegments(segments: readonly Segment[], opts: ForwardOptions): Float32Array | null {
    const { cfg, backend: B } = this;
    const { hiddenSize: H, intermediateSize: I, numHeads: nH, numKvHeads: nKV, headDim: D, rmsNormEps: eps } = cfg;
    const watch = opts.observer;
    const { ids, rowOf } = gatherSegments(segments, watch);
    const T = ids.length; // rows of the pass, over all segments
    const pos0 = segments[0].pos0; // what an observer reports (one segment)

    B.resetScratch();
    const lora = LoraPass.of(B, segments, rowOf);
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
      const p = `model.layers.${l}.`; // adapted matrices are named as in the checkpoint
      const seen = watch && ((point: ActivationPoint, data: Float32Array, cols: number) => watch(l, point, data, T, cols, pos0));
      // --- attention block ---
      B.rmsNorm(h, T, H, L.inputNorm, eps, x);
      seen?.('attn_norm', x, H);
      B.matmuls([{ x, T, w: L.q, out: q }, { x, T, w: L.k, out: k }, { x, T, w: L.v, out: v }]);
      lora?.apply(p + 'self_attn.q_proj.weight', x, H, q, nH * D);
      seen?.('q_proj', q, nH * D);
      lora?.apply(p + 'self_attn.k_proj.weight', x, H, k, nKV * D);
      seen?.('k_proj', k, nKV * D);
      lora?.apply(p + 'self_attn.v_proj.weight', x, H, v, nKV * D);
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
        s.cache.matchPrecision(sk, B);
        s.cache.matchPrecision(sv, B);
        B.attention({
          q: rows(q, rowOf[i], n, nH * D), k: sk, v: sv, cache: s.cache.layers[l], pos0: s.pos0, T: n,
          numHeads: nH, numKvHeads: nKV, headDim: D, scale: this.attnScale,
          window: L.sliding ? cfg.slidingWindow : 0, qChunk: opts.qChunk, out: rows(att, rowOf[i], n, nH * D),
        });
        s.cache.write(l, sk, sv, s.pos0, n);
      });
      seen?.('attn', att, nH * D);
      B.matmul(att, T, L.o, x);
      lora?.apply(p + 'self_attn.o_proj.weight', att, nH * D, x, H);
      seen?.('attn_out', x, H);
      B.rmsNorm(x, T, H, L.postAttnNorm, eps, x);
      seen?.('attn_post', x, H);
      B.add(h, x, T * H);
      seen?.('residual_mid', h, H);
      // --- MLP block ---
      B.rmsNorm(h, T, H, L.preFfnNorm, eps, x);
      seen?.('ffn_norm', x, H);
      B.matmuls([{ x, T, w: L.gate, out: gate }, { x, T, w: L.up, out: up }]);
      lora?.apply(p + 'mlp.gate_proj.weight', x, H, gate, I);
      seen?.('gate', gate, I);
      lora?.apply(p + 'mlp.up_proj.weight', x, H, up, I);
      seen?.('up', up, I);
      B.geluMul(gate, up, T * I, gate);
      seen?.('mlp_act', gate, I);
      B.matmul(gate, T, L.down, x);
      lora?.apply(p + 'mlp.down_proj.weight', gate, I, x, H);
      seen?.('ffn_out', x, H);
      B.rmsNorm(x, T, H, L.postFfnNorm, eps, x);
      seen?.('ffn_post', x, H);
      B.add(h, x, T * H);
      seen?.('residual', h, H);
    }
    for (const s of segments) s.cache.length = s.pos0 + s.ids.length;
    return headLogits(this, h, segments, rowOf, opts);
  }
}
