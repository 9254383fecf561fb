// Gemma 4's mixture-of-experts block (26B-A4B: every layer), beside the dense MLP that always
// runs. The router reads the residual after attention: a weightless RMS norm, times the learned
// router scale and H^-1/2, projected to one logit per expert; softmax over all experts, the top k
// kept and renormalised to sum 1, each times its expert's learned scale. The chosen experts run
// GeGLU (gate and up are the two halves of one stacked gate_up projection) and down on the
// residual normed by pre_feedforward_layernorm_2; their weighted sum is normed by
// post_feedforward_layernorm_2 and added to the dense branch.
//
// Only the chosen experts' weights are read: each expert is its own set of matrices, and a pass
// groups its tokens by expert, so an expert chosen by n tokens is one n-token matmul, and the
// chosen experts' matmuls go to the backend together (matmuls()), not one by one.
import type { Backend, MatmulJob, Matrix } from '../../backend/backend.js';
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

/**
 * Buffers for moeForward over up to T rows. The chosen experts run in groups (one pass over the
 * backend for all their gate/up matmuls, one for their downs) of up to `pairs` (row, expert) pairs:
 * every pair of a decode step at once, a prefill's in a few groups.
 */
export interface MoeScratch {
  z: Float32Array;
  logits: Float32Array;
  pairs: number;
  /** [pairs, H]: the expert inputs, then the down outputs. */
  xin: Float32Array;
  d: Float32Array;
  /** [pairs, width] */
  g: Float32Array;
  u: Float32Array;
  /** [pairs]: a one-token group's routing weights, in the group's order. */
  w: Float32Array;
}

/** Pairs per group past the T·k of a decode step: enough that a prefill's experts run in a few groups. */
const GROUP_PAIRS = 512;

export function moeScratch(B: Backend, m: MoeWeights, T: number, H: number): MoeScratch {
  // An expert gets each row at most once, so T pairs always hold one expert's.
  const pairs = Math.max(T, Math.min(T * m.topK, GROUP_PAIRS));
  const F = m.width;
  return { z: B.scratch(T * H), logits: B.scratch(T * m.numExperts), pairs, xin: B.scratch(pairs * H), d: B.scratch(pairs * H), g: B.scratch(pairs * F), u: B.scratch(pairs * F), w: B.scratch(pairs) };
}

/**
 * The routed experts' contribution for T rows: out[T, H] = post_feedforward_layernorm_2(Σ over each
 * row's chosen experts of weight · down(gelu(gate(y)) · up(y))), y = pre_feedforward_layernorm_2(h).
 * `h` is the residual after attention. Returns the router's choice (for tests).
 */
export function moeForward(B: Backend, m: MoeWeights, h: Float32Array, T: number, H: number, eps: number, s: MoeScratch, out: Float32Array): { experts: Int32Array; weights: Float32Array } {
  const { numExperts: E, topK: k } = m;
  const { z, logits } = s;
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
  // Experts in ascending order, grouped while their pairs fit the scratch; the sum into `out`
  // keeps that order.
  let group: number[] = [];
  let used = 0;
  for (let e = 0; e < E; e++) {
    const n = pairsOf[e].length;
    if (n === 0) continue;
    if (used + n > s.pairs) {
      runExperts(B, m, group, pairsOf, y, T, H, s, weights, out);
      group = [];
      used = 0;
    }
    group.push(e);
    used += n;
  }
  runExperts(B, m, group, pairsOf, y, T, H, s, weights, out);
  B.rmsNorm(out, T, H, m.postNorm2, eps, out);
  return { experts, weights };
}

/** out += Σ weight · down(gelu(gate(y)) · up(y)) over the pairs of `group`'s experts, their matmuls in two backend passes. */
function runExperts(B: Backend, m: MoeWeights, group: readonly number[], pairsOf: readonly number[][], y: Float32Array, T: number, H: number, s: MoeScratch, weights: Float32Array, out: Float32Array): void {
  if (group.length === 0) return;
  const k = m.topK, F = m.width;
  const up: MatmulJob[] = [];
  const down: MatmulJob[] = [];
  let p0 = 0;
  for (const e of group) {
    const sel = pairsOf[e];
    const n = sel.length;
    // An expert every row chose (always, in a one-token step) reads y as it is: its inputs are shared.
    let x = y;
    if (n < T) {
      x = s.xin.subarray(p0 * H, (p0 + n) * H);
      for (let i = 0; i < n; i++) {
        const t = Math.floor(sel[i] / k);
        x.set(y.subarray(t * H, (t + 1) * H), i * H);
      }
    }
    const g = s.g.subarray(p0 * F, (p0 + n) * F);
    up.push({ x, T: n, w: m.gate[e], out: g }, { x, T: n, w: m.up[e], out: s.u.subarray(p0 * F, (p0 + n) * F) });
    down.push({ x: g, T: n, w: m.down[e], out: s.d.subarray(p0 * H, (p0 + n) * H) });
    p0 += n;
  }
  B.matmuls(up);
  B.geluMul(s.g, s.u, p0 * F, s.g);
  B.matmuls(down);
  if (T === 1) {
    // One token (a decode step): out += Σ weight · down output over the group, as one backend op.
    let i = 0;
    for (const e of group) for (const pair of pairsOf[e]) s.w[i++] = weights[pair];
    B.addProduct(out, s.w, 1, p0, s.d, H);
    return;
  }
  p0 = 0;
  for (const e of group) {
    for (const pair of pairsOf[e]) {
      const t = Math.floor(pair / k);
      const w = weights[pair];
      const d = p0 * H;
      for (let c = 0; c < H; c++) out[t * H + c] += w * s.d[d + c];
      p0++;
    }
  }
}
