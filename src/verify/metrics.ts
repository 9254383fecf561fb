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
