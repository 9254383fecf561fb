// Gemma 4's mixture-of-experts block (26B-A4B: every layer), beside the dense MLP that always
// runs. The router reads the residual after attention: a weightless RMS norm, times the learned
// router scale and H^-1/2, projected to one logit per expert; softmax over all experts, the top k
// kept and renormalised to sum 1, each times its expert's learned scale. The chosen experts run
// GeGLU (gate and up are the two halves of one stacked gate_up projection) and down on the
// residual normed by pre_feedforward_layernorm_2; their weighted sum is normed by
// post_feedforward_layernorm_2 and added to the dense branch.
//
// Only the chosen experts' weights are read: each expert is its own set of matrices, and a pass
// groups its tokens by expert, so an expert chosen by n tokens is one n-token matmul.
import type { Backend, Matrix } from '../../backend/backend.js';
import type { WeightTensor } from '../../model/weight.js';
import { sliceRows } from '../../model/formats.js';

export interface MoeWeights {
  numExperts: number;
  topK: number;
  /** Expert width (moe_intermediate_size). */
  width: number;
  /** [E, H]: one logit per expert. */
  router: Matrix;
  /** router.scale × H^-1/2, applied as the router norm's gain. */
  routerGain: Float32Array;
  /** [E] */
  expertScale: Float32Array;
  preNorm2: Float32Array;
  postNorm1: Float32Array;
  postNorm2: Float32Array;
  /** Per expert: gate and up [width, H] (halves of gate_up_proj), down [H, width]. */
  gate: Matrix[];
  up: Matrix[];
  down: Matrix[];
}

/** Split the stacked expert tensors into one gate, up and down matrix per expert. */
export function prepareExperts(B: Backend, gateUp: WeightTensor, down: WeightTensor, E: number, width: number, H: number): Pick<MoeWeights, 'gate' | 'up' | 'down'> {
  const out: Pick<MoeWeights, 'gate' | 'up' | 'down'> = { gate: [], up: [], down: [] };
  for (let e = 0; e < E; e++) {
    const r = 2 * width * e;
    out.gate.push(B.prepare(sliceRows(gateUp, r, r + width, `${gateUp.name}[${e}].gate`)));
    out.up.push(B.prepare(sliceRows(gateUp, r + width, r + 2 * width, `${gateUp.name}[${e}].up`)));
    out.down.push(B.prepare(sliceRows(down, H * e, H * (e + 1), `${down.name}[${e}]`)));
  }
  return out;
}

/**
 * The router's choice for T tokens from their logits [T, E]: experts[t·k + j] and weights[t·k + j]
 * for the j-th largest probability. Softmax and renormalisation in f64; the renormalising sum is
 * clamped below at 6.1e-5 as llama.cpp does.
 */
export function route(logits: Float32Array, T: number, E: number, k: number, expertScale: Float32Array, experts: Int32Array, weights: Float32Array): void {
  const p = new Float64Array(E);
  const order = new Int32Array(E);
  for (let t = 0; t < T; t++) {
    let mx = -Infinity;
    for (let e = 0; e < E; e++) mx = Math.max(mx, logits[t * E + e]);
    let sum = 0;
    for (let e = 0; e < E; e++) sum += p[e] = Math.exp(logits[t * E + e] - mx);
    for (let e = 0; e < E; e++) {
      p[e] /= sum;
      order[e] = e;
    }
    // Partial selection of the k largest, ties to the lower index.
    for (let j = 0; j < k; j++) {
      let best = j;
      for (let i = j + 1; i < E; i++) if (p[order[i]] > p[order[best]] || (p[order[i]] === p[order[best]] && order[i] < order[best])) best = i;
      const tmp = order[j];
      order[j] = order[best];
      order[best] = tmp;
    }
    let kept = 0;
    for (let j = 0; j < k; j++) kept += p[order[j]];
    kept = Math.max(kept, 6.1e-5);
    for (let j = 0; j < k; j++) {
      const e = order[j];
      experts[t * k + j] = e;
      weights[t * k + j] = (p[e] / kept) * expertScale[e];
    }
  }
}

/** Buffers for moeForward over up to T rows, taken once per pass (an expert gets each row at most once). */
export interface MoeScratch {
  z: Float32Array;
  logits: Float32Array;
  xin: Float32Array;
  g: Float32Array;
  u: Float32Array;
  d: Float32Array;
}

export function moeScratch(B: Backend, m: MoeWeights, T: number, H: number): MoeScratch {
  return { z: B.scratch(T * H), logits: B.scratch(T * m.numExperts), xin: B.scratch(T * H), g: B.scratch(T * m.width), u: B.scratch(T * m.width), d: B.scratch(T * H) };
}

/**
 * The routed experts' contribution for T rows: out[T, H] = post_feedforward_layernorm_2(Σ over each
 * row's chosen experts of weight · down(gelu(gate(y)) · up(y))), y = pre_feedforward_layernorm_2(h).
 * `h` is the residual after attention. Returns the router's choice (for tests).
 */
export function moeForward(B: Backend, m: MoeWeights, h: Float32Array, T: number, H: number, eps: number, s: MoeScratch, out: Float32Array): { experts: Int32Array; weights: Float32Array } {
  const { numExperts: E, topK: k, width: F } = m;
  const { z, logits, xin, g, u, d } = s;
  B.rmsNorm(h, T, H, m.routerGain, eps, z);
  B.matmul(z, T, m.router, logits);
  const experts = new Int32Array(T * k);
  const weights = new Float32Array(T * k);
  route(logits, T, E, k, m.expertScale, experts, weights);

  const y = z; // the router input is no longer needed
  B.rmsNorm(h, T, H, m.preNorm2, eps, y);
  // The (row, slot) pairs of each expert, in row order.
  const pairsOf: number[][] = Array.from({ length: E }, () => []);
  for (let i = 0; i < T * k; i++) pairsOf[experts[i]].push(i);
  out.fill(0, 0, T * H);
  for (let e = 0; e < E; e++) {
    const sel = pairsOf[e];
    const n = sel.length;
    if (n === 0) continue;
    for (let i = 0; i < n; i++) {
      const t = Math.floor(sel[i] / k);
      xin.set(y.subarray(t * H, (t + 1) * H), i * H);
    }
    B.matmul(xin, n, m.gate[e], g);
    B.matmul(xin, n, m.up[e], u);
    B.geluMul(g, u, n * F, g);
    B.matmul(g, n, m.down[e], d);
    for (let i = 0; i < n; i++) {
      const t = Math.floor(sel[i] / k);
      const w = weights[sel[i]];
      for (let c = 0; c < H; c++) out[t * H + c] += w * d[i * H + c];
    }
  }
  B.rmsNorm(out, T, H, m.postNorm2, eps, out);
  return { experts, weights };
}
