// An independent float64 reference of the Gemma 4 forward pass with Hugging Face semantics (dense
// and mixture-of-experts layers),
// for tests: the whole sequence at once, no KV cache, written from the model definition rather
// than from lutra's forward. A KV-shared layer attends over the keys and values its source layer
// computed in the same pass (recomputed here, never read from a cache).
import type { Gemma4Config } from '../src/arch/config-types.js';
import { f16BitsToF32, f32ToF16Bits, bf16BitsToF32, f32ToBf16Bits } from '../src/util/half.js';

export interface ReferenceOptions {
  /** llama.cpp's CPU GELU: f16(gelu(f16(x))) for |x| < 10, x above, 0 below. */
  geluF16?: boolean;
  /** Embedding scale sqrt(H) rounded to bf16 (an HF bf16 run) instead of exact. */
  bf16EmbedScale?: boolean;
  /** Filled with the router's choice: routes[layer][position] = expert ids, most probable first. */
  routes?: number[][][];
}

/** Log-softmax rows of the next-token distribution at every position. */
export function gemma4ReferenceLogProbs(cfg: Gemma4Config, W: (name: string) => Float32Array, ids: number[], o: ReferenceOptions = {}): Float64Array[] {
  const tanhGelu = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
  const h16 = (x: number) => f16BitsToF32(f32ToF16Bits(x));
  const gelu = (x: number) => (!o.geluF16 ? tanhGelu(x) : x <= -10 ? 0 : x >= 10 ? x : h16(tanhGelu(h16(x))));
  const { hiddenSize: H, numHeads: nH, numLayers: L, hiddenSizePerLayerInput: P, rmsNormEps: eps } = cfg;
  const T = ids.length;
  const matvec = (m: Float32Array, x: Float64Array, rows: number, cols: number): Float64Array => {
    const y = new Float64Array(rows);
    for (let r = 0; r < rows; r++) {
      let s = 0;
      for (let c = 0; c < cols; c++) s += m[r * cols + c]! * x[c]!;
      y[r] = s;
    }
    return y;
  };
  /** Plain-weight RMS norm over x[off..off+n); no weight = weightless. */
  const rms = (x: Float64Array, w: Float32Array | null, off = 0, n = x.length): void => {
    let ss = 0;
    for (let i = 0; i < n; i++) ss += x[off + i]! ** 2;
    const inv = 1 / Math.sqrt(ss / n + eps);
    for (let i = 0; i < n; i++) x[off + i] = x[off + i]! * inv * (w ? w[i]! : 1);
  };
  /** HF rotate-half RoPE over a head of D dims; pairs j ≥ R do not turn. */
  const rope = (x: Float64Array, off: number, pos: number, D: number, theta: number, fraction: number): void => {
    const R = Math.floor((fraction * D) / 2);
    for (let j = 0; j < R; j++) {
      const ang = pos * theta ** (-(2 * j) / D);
      const c = Math.cos(ang), s = Math.sin(ang);
      const a = x[off + j]!, b = x[off + j + D / 2]!;
      x[off + j] = a * c - b * s;
      x[off + j + D / 2] = b * c + a * s;
    }
  };
  /**
   * HF's router and experts on the residual x after attention: softmax over the router logits,
   * top k, renormalised, times the per-expert scale; each chosen expert's GeGLU on
   * pre_feedforward_layernorm_2(x); the weighted sum through post_feedforward_layernorm_2.
   */
  const moe = (p: (s: string) => Float32Array, x: Float64Array): { out: Float64Array; chosen: number[] } => {
    const E = cfg.numExperts!, k = cfg.topKExperts!, F = cfg.moeIntermediateSize!;
    const z = Float64Array.from(x);
    rms(z, null);
    const rs = p('router.scale');
    for (let i = 0; i < H; i++) z[i] = z[i]! * rs[i]! / Math.sqrt(H);
    const logit = matvec(p('router.proj.weight'), z, E, H);
    const mx = Math.max(...logit);
    const pr = Array.from(logit, (v) => Math.exp(v - mx));
    const tot = pr.reduce((a, b) => a + b, 0);
    const chosen = pr.map((v, e) => ({ e, v: v / tot })).sort((a, b) => b.v - a.v || a.e - b.e).slice(0, k);
    const kept = chosen.reduce((a, c) => a + c.v, 0);
    const y = Float64Array.from(x);
    rms(y, p('pre_feedforward_layernorm_2.weight'));
    const gu = p('experts.gate_up_proj'), dn = p('experts.down_proj'), es = p('router.per_expert_scale');
    const out = new Float64Array(H);
    for (const { e, v } of chosen) {
      const w = (v / kept) * es[e]!;
      const g = matvec(gu.subarray(e * 2 * F * H, (e * 2 * F + F) * H), y, F, H);
      const u = matvec(gu.subarray((e * 2 * F + F) * H, (e + 1) * 2 * F * H), y, F, H);
      for (let i = 0; i < F; i++) g[i] = gelu(g[i]!) * u[i]!;
      const d = matvec(dn.subarray(e * H * F, (e + 1) * H * F), g, H, F);
      for (let i = 0; i < H; i++) out[i] = out[i]! + w * d[i]!;
    }
    rms(out, p('post_feedforward_layernorm_2.weight'));
    return { out, chosen: chosen.map((c) => c.e) };
  };
  const emb = W('model.embed_tokens.weight');
  const scale = o.bf16EmbedScale ? bf16BitsToF32(f32ToBf16Bits(Math.sqrt(H))) : Math.sqrt(H);
  const xs = ids.map((id) => {
    const x = new Float64Array(H);
    for (let i = 0; i < H; i++) x[i] = emb[id * H + i]! * scale;
    return x;
  });
  // Per-layer inputs, [T][L·P].
  let ple: Float64Array[] = [];
  if (P > 0) {
    const table = W('model.embed_tokens_per_layer.weight');
    const proj = W('model.per_layer_model_projection.weight');
    const norm = W('model.per_layer_projection_norm.weight');
    ple = ids.map((id, t) => {
      const pr = matvec(proj, xs[t]!, L * P, H);
      for (let i = 0; i < L * P; i++) pr[i] = pr[i]! / Math.sqrt(H);
      for (let l = 0; l < L; l++) rms(pr, norm, l * P, P);
      for (let i = 0; i < L * P; i++) pr[i] = (pr[i]! + table[id * L * P + i]! * Math.sqrt(P)) / Math.SQRT2;
      return pr;
    });
  }
  const kvOf: { K: Float64Array[]; V: Float64Array[] }[] = [];
  for (let l = 0; l < L; l++) {
    const p = (s: string) => W(`model.layers.${l}.${s}`);
    const ly = cfg.layers[l]!;
    const D = ly.headDim, nKV = ly.numKvHeads, I = ly.intermediateSize;
    const rp = ly.sliding ? cfg.ropeLocal : cfg.ropeGlobal;
    const Q: Float64Array[] = [];
    const own = ly.kvSource === l;
    const K: Float64Array[] = [], V: Float64Array[] = [];
    for (let t = 0; t < T; t++) {
      const h = Float64Array.from(xs[t]!);
      rms(h, p('input_layernorm.weight'));
      const q = matvec(p('self_attn.q_proj.weight'), h, nH * D, H);
      for (let hd = 0; hd < nH; hd++) { rms(q, p('self_attn.q_norm.weight'), hd * D, D); rope(q, hd * D, t, D, rp.theta, rp.rotaryFraction); }
      Q.push(q);
      if (own) {
        const k = matvec(p('self_attn.k_proj.weight'), h, nKV * D, H);
        const v = ly.kEqV ? Float64Array.from(k) : matvec(p('self_attn.v_proj.weight'), h, nKV * D, H);
        for (let hd = 0; hd < nKV; hd++) {
          rms(k, p('self_attn.k_norm.weight'), hd * D, D);
          rope(k, hd * D, t, D, rp.theta, rp.rotaryFraction);
          rms(v, null, hd * D, D);
        }
        K.push(k); V.push(v);
      }
    }
    kvOf.push(own ? { K, V } : kvOf[ly.kvSource]!);
    const { K: Ks, V: Vs } = kvOf[l]!;
    for (let t = 0; t < T; t++) {
      const att = new Float64Array(nH * D);
      for (let hd = 0; hd < nH; hd++) {
        const kvh = Math.floor(hd / (nH / nKV));
        const lo = ly.sliding ? Math.max(0, t - cfg.slidingWindow + 1) : 0;
        const sc: number[] = [];
        for (let s = lo; s <= t; s++) {
          let dot = 0;
          for (let j = 0; j < D; j++) dot += Q[t]![hd * D + j]! * Ks[s]![kvh * D + j]!;
          sc.push(dot);
        }
        const mx = Math.max(...sc);
        const ex = sc.map((z) => Math.exp(z - mx));
        const sum = ex.reduce((a, b) => a + b, 0);
        for (let s = lo; s <= t; s++) {
          const wgt = ex[s - lo]! / sum;
          for (let j = 0; j < D; j++) att[hd * D + j] = att[hd * D + j]! + wgt * Vs[s]![kvh * D + j]!;
        }
      }
      const out = matvec(p('self_attn.o_proj.weight'), att, H, nH * D);
      rms(out, p('post_attention_layernorm.weight'));
      const x = xs[t]!;
      for (let i = 0; i < H; i++) x[i] = x[i]! + out[i]!;
      const h2 = Float64Array.from(x);
      rms(h2, p('pre_feedforward_layernorm.weight'));
      const gate = matvec(p('mlp.gate_proj.weight'), h2, I, H);
      const up = matvec(p('mlp.up_proj.weight'), h2, I, H);
      for (let i = 0; i < I; i++) gate[i] = gelu(gate[i]!) * up[i]!;
      const down = matvec(p('mlp.down_proj.weight'), gate, H, I);
      if (cfg.enableMoeBlock) {
        rms(down, p('post_feedforward_layernorm_1.weight'));
        const ex = moe(p, x);
        for (let i = 0; i < H; i++) down[i] = down[i]! + ex.out[i]!;
        if (o.routes) (o.routes[l] ??= [])[t] = ex.chosen;
      }
      rms(down, p('post_feedforward_layernorm.weight'));
      for (let i = 0; i < H; i++) x[i] = x[i]! + down[i]!;
      if (P > 0) {
        const g = matvec(p('per_layer_input_gate.weight'), x, P, H);
        for (let i = 0; i < P; i++) g[i] = gelu(g[i]!) * ple[t]![l * P + i]!;
        const pr = matvec(p('per_layer_projection.weight'), g, H, P);
        rms(pr, p('post_per_layer_input_norm.weight'));
        for (let i = 0; i < H; i++) x[i] = x[i]! + pr[i]!;
      }
      const s = p('layer_scalar')[0]!;
      for (let i = 0; i < H; i++) x[i] = x[i]! * s;
    }
  }
  const Vocab = cfg.vocabSize;
  const c = cfg.finalLogitSoftcapping;
  return xs.map((x) => {
    rms(x, W('model.norm.weight'));
    const logits = matvec(emb, x, Vocab, H);
    if (c) for (let i = 0; i < Vocab; i++) logits[i] = c * Math.tanh(logits[i]! / c);
    let mx = -Infinity;
    for (let i = 0; i < Vocab; i++) if (logits[i]! > mx) mx = logits[i]!;
    let sum = 0;
    for (let i = 0; i < Vocab; i++) sum += Math.exp(logits[i]! - mx);
    const lse = mx + Math.log(sum);
    for (let i = 0; i < Vocab; i++) logits[i] = logits[i]! - lse;
    return logits;
  });
}
