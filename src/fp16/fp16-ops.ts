// The ops of `--numerics fp16,accumulate=fp16`: every product, partial sum and statistic rounded to
// fp16, summed sequentially: the harshest accelerator. Plain TypeScript, slow by design; only
// this mode uses it (with fp32 accumulation the inner backend's kernels run and their outputs
// are rounded).
import { keyValueRows, type AttentionArgs } from '../backend/backend.js';
import { f16round as r } from './round.js';

/** out[t, row] = x[t]·w[row], with decodeRow giving weight rows as f32 (already fp16 values). */
export function matmulF16(x: Float32Array, T: number, rows: number, cols: number, decodeRow: (row: number, dst: Float32Array) => void, out: Float32Array): void {
  const w = new Float32Array(cols);
  for (let row = 0; row < rows; row++) {
    decodeRow(row, w);
    for (let t = 0; t < T; t++) {
      const xo = t * cols;
      let acc = 0;
      for (let i = 0; i < cols; i++) acc = r(acc + r(x[xo + i] * w[i]));
      out[t * rows + row] = acc;
    }
  }
}

/** RMSNorm with an fp16 mean of squares. Returns false when that statistic overflowed. */
export function rmsNormF16(x: Float32Array, rows: number, dim: number, gain: Float32Array, eps: number, out: Float32Array): boolean {
  let finite = true;
  for (let row = 0; row < rows; row++) {
    const o = row * dim;
    let ss = 0;
    for (let i = 0; i < dim; i++) ss = r(ss + r(x[o + i] * x[o + i]));
    if (!Number.isFinite(ss)) finite = false;
    const inv = r(1 / r(Math.sqrt(r(r(ss / dim) + eps))));
    for (let i = 0; i < dim; i++) out[o + i] = r(r(x[o + i] * inv) * gain[i]);
  }
  return finite;
}

/** Causal (optionally sliding-window) attention with fp16 scores, exponentials and sums. */
export function attentionF16(a: AttentionArgs): void {
  const { q, pos0, T, numHeads, numKvHeads, headDim: D, scale, window, out } = a;
  const group = numHeads / numKvHeads;
  const keyRow = keyValueRows(a);
  for (let t = 0; t < T; t++) {
    const qp = pos0 + t;
    const lo = window > 0 ? Math.max(0, qp - window + 1) : 0;
    const scores = new Float32Array(qp - lo + 1);
    for (let h = 0; h < numHeads; h++) {
      const qo = (t * numHeads + h) * D;
      const kvo = Math.floor(h / group) * D;
      let max = -Infinity;
      for (let p = lo; p <= qp; p++) {
        const [K, , base] = keyRow(p);
        let dot = 0;
        for (let d = 0; d < D; d++) dot = r(dot + r(q[qo + d] * K[base + kvo + d]));
        const s = r(dot * scale);
        scores[p - lo] = s;
        if (s > max) max = s;
      }
      let sum = 0;
      for (let j = 0; j < scores.length; j++) {
        scores[j] = r(Math.exp(r(scores[j] - max)));
        sum = r(sum + scores[j]);
      }
      for (let d = 0; d < D; d++) {
        let acc = 0;
        for (let p = lo; p <= qp; p++) {
          const [, V, base] = keyRow(p);
          acc = r(acc + r(scores[p - lo] * V[base + kvo + d]));
        }
        out[qo + d] = r(acc / sum);
      }
    }
  }
}

/** gelu_tanh(gate) · up with the gelu result rounded before the product. */
export function geluMulF16(gate: Float32Array, up: Float32Array, n: number, out: Float32Array): void {
  const c = Math.sqrt(2 / Math.PI);
  for (let i = 0; i < n; i++) {
    const x = gate[i];
    out[i] = r(r(0.5 * x * (1 + Math.tanh(c * (x + 0.044715 * x * x * x)))) * up[i]);
  }
}
