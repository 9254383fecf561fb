// Per-step divergence metrics, in float64 over the full vocabulary.

/** log-softmax of a logit (or log-probability) vector. */
export function logSoftmax(x: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < x.length; i++) if (x[i] > max) max = x[i];
  let sum = 0;
  for (let i = 0; i < x.length; i++) sum += Math.exp(x[i] - max);
  const lse = max + Math.log(sum);
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i] - lse;
  return out;
}

/** KL(P ‖ Q) in nats from log-probabilities. */
export function klDivergence(logP: ArrayLike<number>, logQ: ArrayLike<number>): number {
  let kl = 0;
  for (let i = 0; i < logP.length; i++) {
    const p = Math.exp(logP[i]);
    if (p > 0) kl += p * (logP[i] - logQ[i]);
  }
  return Math.max(0, kl);
}

/** Index of the largest value and its margin over the runner-up. */
export function top2(x: ArrayLike<number>): { top: number; margin: number } {
  let a = 0;
  let b = -1;
  for (let i = 1; i < x.length; i++) {
    if (x[i] > x[a]) {
      b = a;
      a = i;
    } else if (b < 0 || x[i] > x[b]) b = i;
  }
  return { top: a, margin: b < 0 ? Infinity : x[a] - x[b] };
}

/** Entropy in nats from log-probabilities. */
export function entropy(logP: ArrayLike<number>): number {
  let h = 0;
  for (let i = 0; i < logP.length; i++) {
    const p = Math.exp(logP[i]);
    if (p > 0) h -= p * logP[i];
  }
  return h;
}

/**
 * Pearson correlation in float64 with population standard deviations (ddof = 0), as numpy's
 * corrcoef / ANEMLL's harness. NaN when either standard deviation is below 1e-12 (a constant
 * vector has no correlation). Clamped to [-1, 1] against rounding.
 */
export function pearson(x: ArrayLike<number>, y: ArrayLike<number>): number {
  const n = x.length;
  if (n !== y.length) throw new Error(`internal: pearson of lengths ${n} and ${y.length}`);
  if (n === 0) return NaN;
  let mx = 0;
  let my = 0;
  for (let i = 0; i < n; i++) {
    mx += x[i];
    my += y[i];
  }
  mx /= n;
  my /= n;
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (let i = 0; i < n; i++) {
    const a = x[i] - mx;
    const b = y[i] - my;
    sxy += a * b;
    sxx += a * a;
    syy += b * b;
  }
  if (Math.sqrt(sxx / n) < 1e-12 || Math.sqrt(syy / n) < 1e-12) return NaN;
  return Math.max(-1, Math.min(1, sxy / Math.sqrt(sxx * syy)));
}

/** Cosine similarity in float64; NaN when either vector is all zeros. */
export function cosine(x: ArrayLike<number>, y: ArrayLike<number>): number {
  let xy = 0;
  let xx = 0;
  let yy = 0;
  for (let i = 0; i < x.length; i++) {
    xy += x[i] * y[i];
    xx += x[i] * x[i];
    yy += y[i] * y[i];
  }
  if (xx === 0 || yy === 0) return NaN;
  return Math.max(-1, Math.min(1, xy / Math.sqrt(xx * yy)));
}
