// 1-D k-means over weighted points. Exact (optimal) by dynamic programming — each layer by
// divide-and-conquer row minima or, once the layer is deep enough for it to be cheaper, by
// Knuth's window; both valid because the 1-D k-means cost is monotone (the optimal split points
// never move left as the right end or the cluster count grows) — when k·u·log u is affordable;
// otherwise the exact solution on equal-error bins refined by Lloyd iterations, each an
// O(k log u) sweep over sorted points using prefix sums. Deterministic: no randomness anywhere.

export interface Points {
  /** Sorted distinct values. */
  values: Float64Array;
  /** Multiplicity of each value. */
  weights: Float64Array;
}

let sKeys = new Uint32Array(0);
let sTmp = new Uint32Array(0);
const sHist = new Uint32Array(4 * 256);

/**
 * Sort f32 values by an LSD radix sort on order-preserving u32 keys, skipping the byte passes
 * where every key agrees (the low two bytes of bf16-sourced weights: two passes of 256 buckets).
 * Same order as Float32Array.prototype.sort (−0 before +0); returns false (nothing done) on NaN.
 */
function radixSortF32(x: Float32Array, out: Float32Array): boolean {
  const n = x.length;
  if (sKeys.length < n) {
    sKeys = new Uint32Array(Math.max(n, 2 * sKeys.length));
    sTmp = new Uint32Array(sKeys.length);
  }
  let a = sKeys;
  let b = sTmp;
  const bitsIn = new Uint32Array(x.buffer, x.byteOffset, n);
  const h = sHist;
  h.fill(0);
  for (let i = 0; i < n; i++) {
    const v = x[i];
    if (v !== v) return false;
    const u = bitsIn[i];
    // Negative: flip all bits; positive: flip the sign bit. Unsigned order = numeric order.
    const key = (u & 0x80000000 ? ~u : u | 0x80000000) >>> 0;
    a[i] = key;
    h[key & 255]++;
    h[256 + ((key >>> 8) & 255)]++;
    h[512 + ((key >>> 16) & 255)]++;
    h[768 + (key >>> 24)]++;
  }
  for (let pass = 0; pass < 4; pass++) {
    const base = pass * 256;
    const shift = pass * 8;
    // A byte every key shares does not reorder anything.
    if (h[base + ((a[0] >>> shift) & 255)] === n) continue;
    let sum = 0;
    for (let d = 0; d < 256; d++) {
      const c = h[base + d];
      h[base + d] = sum;
      sum += c;
    }
    for (let i = 0; i < n; i++) {
      const key = a[i];
      b[h[base + ((key >>> shift) & 255)]++] = key;
    }
    const t = a;
    a = b;
    b = t;
  }
  const outBits = new Uint32Array(out.buffer, out.byteOffset, n);
  for (let i = 0; i < n; i++) {
    const key = a[i];
    outBits[i] = key & 0x80000000 ? key & 0x7fffffff : ~key;
  }
  return true;
}

/** Sort and deduplicate; NaN is rejected by the caller. */
export function distinctPoints(x: ArrayLike<number>): Points {
  const n = x.length;
  let s: Float32Array | Float64Array;
  if (x instanceof Float32Array) {
    // f32 inputs (all weights) by radix sort; the order is the same as a typed-array sort's.
    s = new Float32Array(n);
    if (!radixSortF32(x, s)) s = new Float32Array(x).sort();
  } else {
    s = new Float64Array(x as ArrayLike<number>).sort();
  }
  const values = new Float64Array(n);
  const weights = new Float64Array(n);
  let u = 0;
  for (let i = 0; i < n; i++) {
    const v = s[i];
    if (u > 0 && v === values[u - 1]) weights[u - 1]++;
    else {
      values[u] = v;
      weights[u] = 1;
      u++;
    }
  }
  return { values: values.slice(0, u), weights: weights.slice(0, u) };
}

class Prefix {
  readonly w: Float64Array;
  readonly wx: Float64Array;
  readonly wxx: Float64Array;
  constructor(p: Points) {
    const n = p.values.length;
    this.w = new Float64Array(n + 1);
    this.wx = new Float64Array(n + 1);
    this.wxx = new Float64Array(n + 1);
    for (let i = 0; i < n; i++) {
      const v = p.values[i];
      const w = p.weights[i];
      this.w[i + 1] = this.w[i] + w;
      this.wx[i + 1] = this.wx[i] + w * v;
      this.wxx[i + 1] = this.wxx[i] + w * v * v;
    }
  }
  /** Sum of squared distances to the mean of points [a, b). */
  cost(a: number, b: number): number {
    const w = this.w[b] - this.w[a];
    if (w <= 0) return 0;
    const sx = this.wx[b] - this.wx[a];
    return Math.max(0, this.wxx[b] - this.wxx[a] - (sx * sx) / w);
  }
  mean(a: number, b: number): number {
    return (this.wx[b] - this.wx[a]) / (this.w[b] - this.w[a]);
  }
}

// Scratch for kmeansExact, reused across calls (groups) so the hot path allocates nothing.
let sW = new Float64Array(0);
let sX = new Float64Array(0);
let sQ = new Float64Array(0);
let sPrev = new Float64Array(0);
let sCur = new Float64Array(0);
let sArg = new Int32Array(0);

/**
 * One layer of the DP by divide and conquer over the monotone split points: for each j in
 * [jlo, jhi], cur[j] = min over i in [ilo, min(ihi, j)] of prev[i] + cost(i, j), and arg[base + j]
 * the first such i. A plain function over typed arrays (no closure, cost inlined): the hot loop.
 */
function layer(
  prev: Float64Array, cur: Float64Array, arg: Int32Array, base: number,
  W: Float64Array, X: Float64Array, Q: Float64Array,
  jlo: number, jhi: number, ilo: number, ihi: number,
): void {
  while (jlo <= jhi) {
    const j = (jlo + jhi) >> 1;
    const wj = W[j];
    const xj = X[j];
    const qj = Q[j];
    const top = ihi < j ? ihi : j;
    let best = Infinity;
    let bi = ilo;
    for (let i = ilo; i <= top; i++) {
      // Same arithmetic as Prefix.cost(i, j), so results do not depend on this being inlined.
      const w = wj - W[i];
      let c = 0;
      if (w > 0) {
        const sx = xj - X[i];
        c = qj - Q[i] - (sx * sx) / w;
        if (!(c > 0)) c = 0;
      }
      const v = prev[i] + c;
      if (v < best) {
        best = v;
        bi = i;
      }
    }
    cur[j] = best;
    arg[base + j] = bi;
    // Recurse into the smaller half, loop on the other (bounded stack depth).
    if (j - jlo < jhi - j) {
      layer(prev, cur, arg, base, W, X, Q, jlo, j - 1, ilo, bi);
      jlo = j + 1;
      ilo = bi;
    } else {
      layer(prev, cur, arg, base, W, X, Q, j + 1, jhi, bi, ihi);
      jhi = j - 1;
      ihi = bi;
    }
  }
}

/**
 * One layer of the DP with Knuth's bounds: the first optimal split is monotone in both the
 * number of clusters and the right end, opt[c−1][j] ≤ opt[c][j] ≤ opt[c][j+1], so j runs from
 * n down and scans only that window (O(n²) over all layers instead of O(k·n·log n)).
 */
function layerKnuth(
  prev: Float64Array, cur: Float64Array, arg: Int32Array, base: number, prevBase: number,
  W: Float64Array, X: Float64Array, Q: Float64Array, n: number,
): void {
  let hiNext = n;
  for (let j = n; j >= 0; j--) {
    const wj = W[j];
    const xj = X[j];
    const qj = Q[j];
    const lo = prevBase < 0 ? 0 : arg[prevBase + j];
    const top = hiNext < j ? hiNext : j;
    let best = Infinity;
    let bi = lo;
    for (let i = lo; i <= top; i++) {
      const w = wj - W[i];
      let c = 0;
      if (w > 0) {
        const sx = xj - X[i];
        c = qj - Q[i] - (sx * sx) / w;
        if (!(c > 0)) c = 0;
      }
      const v = prev[i] + c;
      if (v < best) {
        best = v;
        bi = i;
      }
    }
    cur[j] = best;
    arg[base + j] = bi;
    hiNext = bi;
  }
}

/** Optimal k centroids (sorted). Requires k < number of distinct points. */
export function kmeansExact(p: Points, k: number): Float64Array {
  const n = p.values.length;
  if (sW.length < n + 1) {
    const m = Math.max(n + 1, 2 * sW.length);
    sW = new Float64Array(m);
    sX = new Float64Array(m);
    sQ = new Float64Array(m);
    sPrev = new Float64Array(m);
    sCur = new Float64Array(m);
  }
  if (sArg.length < (k - 1) * (n + 1)) sArg = new Int32Array(Math.max((k - 1) * (n + 1), 2 * sArg.length));
  const W = sW;
  const X = sX;
  const Q = sQ;
  const arg = sArg;
  W[0] = X[0] = Q[0] = 0;
  for (let i = 0; i < n; i++) {
    const v = p.values[i];
    const w = p.weights[i];
    W[i + 1] = W[i] + w;
    X[i + 1] = X[i] + w * v;
    Q[i + 1] = Q[i] + w * v * v;
  }
  // prev[j] = best cost of covering the first j points with c clusters.
  let prev = sPrev;
  let cur = sCur;
  for (let j = 0; j <= n; j++) {
    const w = W[j];
    let c = 0;
    if (w > 0) c = Math.max(0, Q[j] - (X[j] * X[j]) / w);
    prev[j] = c;
  }
  const log2n = Math.log2(n + 1);
  for (let c = 2; c <= k; c++) {
    // Knuth's window for layer c sums to about n²/(2c(c−1)) evaluations, divide and conquer to
    // about n·log2(n): take the cheaper (both give the first optimal split, so the same result).
    if (c > 2 && (2 * c * (c - 1) * log2n > n)) layerKnuth(prev, cur, arg, (c - 2) * (n + 1), (c - 3) * (n + 1), W, X, Q, n);
    else layer(prev, cur, arg, (c - 2) * (n + 1), W, X, Q, 0, n, 0, n);
    const t = prev;
    prev = cur;
    cur = t;
  }
  // Walk the split points back from the full range.
  const centroids = new Float64Array(k);
  let end = n;
  for (let c = k; c >= 2; c--) {
    const start = arg[(c - 2) * (n + 1) + end];
    centroids[c - 1] = start < end ? (X[end] - X[start]) / (W[end] - W[start]) : p.values[Math.max(0, start - 1)];
    end = start;
  }
  centroids[0] = end > 0 ? X[end] / W[end] : p.values[0];
  return centroids.sort();
}

/** Merge consecutive sorted points into at most m bins of about equal weight (value = bin mean). Superseded by coarsenByCost for kmeansApprox. */
export function coarsen(p: Points, m: number): Points {
  const n = p.values.length;
  if (n <= m) return p;
  const pre = new Prefix(p);
  const total = pre.w[n];
  const values: number[] = [];
  const weights: number[] = [];
  let a = 0;
  for (let b = 1; b <= m && a < n; b++) {
    // End this bin at the first point whose cumulative weight reaches b/m of the total.
    let e = b === m ? n : Math.max(a + 1, lowerBound(pre.w, (b / m) * total));
    e = Math.min(e, n);
    values.push(pre.mean(a, e));
    weights.push(pre.w[e] - pre.w[a]);
    a = e;
  }
  return { values: Float64Array.from(values), weights: Float64Array.from(weights) };
}

/**
 * Merge consecutive sorted points into at most m bins, each as wide as possible while its
 * within-bin squared error stays under one threshold (the smallest that yields ≤ m bins, by
 * bisection). Unlike equal-weight bins, this keeps sparse tails and outliers in bins of their
 * own, where the optimal clusters are small: equal-weight bins put the k = 64 optimum of bf16
 * weight groups 13% (up to 95%) out of reach, these ≤ 1%.
 */
export function coarsenByCost(p: Points, m: number): Points {
  const n = p.values.length;
  if (n <= m) return p;
  const pre = new Prefix(p);
  const total = pre.cost(0, n);
  // Bisect the threshold geometrically, from a guess for m bins of a smooth density (each bin's
  // error ≈ total / m³), until it gives between m − m/32 and m bins (or 40 steps).
  let lo = 0;
  let hi = total / (m * m * m);
  while (hi < total && binsUnder(pre, n, hi, m) > m) (lo = hi), (hi *= 8);
  if (hi > total) hi = total;
  for (let it = 0; it < 40 && hi - lo > 1e-12 * hi; it++) {
    const mid = lo > 0 ? Math.sqrt(lo * hi) : hi / 8;
    const bins = binsUnder(pre, n, mid, m);
    if (bins <= m) {
      hi = mid;
      if (bins >= m - (m >> 5)) break;
    } else lo = mid;
  }
  const values: number[] = [];
  const weights: number[] = [];
  for (let a = 0; a < n; ) {
    const e = binEnd(pre, n, a, hi);
    values.push(pre.mean(a, e));
    weights.push(pre.w[e] - pre.w[a]);
    a = e;
  }
  return { values: Float64Array.from(values), weights: Float64Array.from(weights) };
}

/** End of the widest bin starting at a with squared error ≤ T (at least one point). */
function binEnd(pre: Prefix, n: number, a: number, T: number): number {
  const W = pre.w;
  const X = pre.wx;
  const Q = pre.wxx;
  const wa = W[a];
  const xa = X[a];
  const qa = Q[a];
  let e = a + 1;
  while (e < n) {
    // Prefix.cost(a, e + 1), inlined.
    const w = W[e + 1] - wa;
    const sx = X[e + 1] - xa;
    const c = Math.max(0, Q[e + 1] - qa - (sx * sx) / w);
    if (!(c <= T)) break;
    e++;
  }
  return e;
}

/** Number of greedy bins with error ≤ T (stops counting past m). */
function binsUnder(pre: Prefix, n: number, T: number, m: number): number {
  let bins = 0;
  for (let a = 0; a < n && bins <= m; bins++) a = binEnd(pre, n, a, T);
  return bins;
}

/**
 * Near-optimal k-means for large groups: the exact solution on ≤ `bins` equal-error bins
 * (coarsenByCost), refined by Lloyd iterations on all points. (Lloyd alone, from quantile
 * centroids, stalled 5.8% above the optimum on a 2560-value gaussian group; see
 * docs/EXPERIMENTS.md and docs/EXPERIMENTS-lut.md.)
 */
export function kmeansApprox(p: Points, k: number, bins = 256): Float64Array {
  const coarse = coarsenByCost(p, Math.max(bins, 2 * k));
  return kmeansLloyd(p, k, 100, coarse.values.length > k ? kmeansExact(coarse, k) : undefined);
}

/** Lloyd iterations on sorted weighted points, from `init` or weighted-quantile centroids. */
export function kmeansLloyd(p: Points, k: number, maxIter = 100, init?: Float64Array): Float64Array {
  const n = p.values.length;
  const pre = new Prefix(p);
  const total = pre.w[n];
  let c = new Float64Array(k);
  if (init) c.set(init);
  else {
    for (let j = 0; j < k; j++) {
      // pre.w[i] counts points 0..i-1, so the point holding quantile q is lowerBound(q) − 1.
      const i = lowerBound(pre.w, ((j + 0.5) / k) * total) - 1;
      c[j] = p.values[Math.max(0, Math.min(n - 1, i))];
    }
  }
  for (let it = 0; it < maxIter; it++) {
    // Cluster j holds the points between the midpoints to its neighbours.
    const next = new Float64Array(k);
    let a = 0;
    let moved = false;
    for (let j = 0; j < k; j++) {
      const b = j === k - 1 ? n : upperBoundValue(p.values, (c[j] + c[j + 1]) / 2, a);
      next[j] = b > a ? pre.mean(a, b) : c[j];
      if (next[j] !== c[j]) moved = true;
      a = b;
    }
    c = next.sort();
    if (!moved) break;
  }
  return c;
}

function lowerBound(arr: Float64Array, x: number): number {
  let lo = 0;
  let hi = arr.length;
  while (lo < hi) {
    const m = (lo + hi) >> 1;
    if (arr[m] < x) lo = m + 1;
    else hi = m;
  }
  return lo;
}

/** First index ≥ from with values[i] > x. */
function upperBoundValue(values: Float64Array, x: number, from: number): number {
  let lo = from;
  let hi = values.length;
  while (lo < hi) {
    const m = (lo + hi) >> 1;
    if (values[m] <= x) lo = m + 1;
    else hi = m;
  }
  return lo;
}

/** Total weighted squared error of assigning each point to its nearest centroid. */
export function clusteringCost(p: Points, centroids: Float64Array): number {
  let e = 0;
  for (let i = 0; i < p.values.length; i++) {
    let best = Infinity;
    for (const c of centroids) best = Math.min(best, (p.values[i] - c) ** 2);
    e += best * p.weights[i];
  }
  return e;
}
