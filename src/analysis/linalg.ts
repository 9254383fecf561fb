// Singular values of a weight change, in float64: the Gram matrix of the smaller side reduced to
// tridiagonal form by Householder reflections, its eigenvalues found by bisection on Sturm counts
// (robust, and fast enough for the few hundred columns of a projection), σ = √λ. A low-rank change
// B·A (LoRA) goes through the r × r problem instead: A's rows orthonormalised (Aᵀ = Q·R), then the
// singular values of B·Rᵀ, which are those of B·A. Through the Gram matrix a singular value carries an
// absolute error of about √ε·σ_max (1e-8 relative to the largest): plenty for a report, not for
// resolving values below that.

/** Eigenvalues (descending) of the symmetric n × n matrix `a` (row-major; overwritten). */
export function symmetricEigenvalues(a: Float64Array, n: number): Float64Array {
  const v = new Float64Array(n);
  const p = new Float64Array(n);
  // Householder: zero column k below the subdiagonal, for k = 0 .. n-3.
  for (let k = 0; k < n - 2; k++) {
    let norm2 = 0;
    for (let i = k + 1; i < n; i++) norm2 += a[i * n + k] * a[i * n + k];
    if (norm2 === 0) continue;
    const x0 = a[(k + 1) * n + k];
    const alpha = x0 > 0 ? -Math.sqrt(norm2) : Math.sqrt(norm2);
    let vv = 0;
    for (let i = k + 1; i < n; i++) {
      v[i] = a[i * n + k] - (i === k + 1 ? alpha : 0);
      vv += v[i] * v[i];
    }
    if (vv === 0) continue;
    // Trailing block A ← H A H with H = I − 2vvᵀ/(vᵀv): p = 2Av/vv, w = p − (vᵀp/vv)v, A ← A − vwᵀ − wvᵀ.
    let vp = 0;
    for (let i = k + 1; i < n; i++) {
      let s = 0;
      for (let j = k + 1; j < n; j++) s += a[i * n + j] * v[j];
      p[i] = (2 * s) / vv;
      vp += v[i] * p[i];
    }
    const K = vp / vv;
    for (let i = k + 1; i < n; i++) p[i] -= K * v[i];
    for (let i = k + 1; i < n; i++) for (let j = k + 1; j < n; j++) a[i * n + j] -= v[i] * p[j] + p[i] * v[j];
    a[(k + 1) * n + k] = a[k * n + k + 1] = alpha;
    for (let i = k + 2; i < n; i++) a[i * n + k] = a[k * n + i] = 0;
  }
  const d = new Float64Array(n);
  const e = new Float64Array(n); // e[i] couples i and i+1
  for (let i = 0; i < n; i++) {
    d[i] = a[i * n + i];
    if (i + 1 < n) e[i] = a[(i + 1) * n + i];
  }
  // Gershgorin bounds, then bisection: count(x) = eigenvalues below x (negative pivots of T − xI).
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < n; i++) {
    const r = (i > 0 ? Math.abs(e[i - 1]) : 0) + (i + 1 < n ? Math.abs(e[i]) : 0);
    lo = Math.min(lo, d[i] - r);
    hi = Math.max(hi, d[i] + r);
  }
  const span = Math.max(Math.abs(lo), Math.abs(hi), Number.MIN_VALUE);
  const count = (x: number) => {
    let c = 0;
    let q = 1;
    for (let i = 0; i < n; i++) {
      q = d[i] - x - (i > 0 ? (e[i - 1] * e[i - 1]) / q : 0);
      if (q === 0) q = -1e-300 * span;
      if (q < 0) c++;
    }
    return c;
  };
  const out = new Float64Array(n);
  for (let m = 0; m < n; m++) {
    // The (m+1)-th smallest eigenvalue: the least x with count(x) > m.
    let a0 = lo;
    let b0 = hi;
    for (let it = 0; it < 200 && b0 - a0 > 1e-15 * span; it++) {
      const mid = 0.5 * (a0 + b0);
      if (count(mid) > m) b0 = mid;
      else a0 = mid;
    }
    out[n - 1 - m] = 0.5 * (a0 + b0);
  }
  return out;
}

/** Singular values (descending) of the dense `rows` × `cols` matrix `m`. */
export function singularValues(m: ArrayLike<number>, rows: number, cols: number): Float64Array {
  const n = Math.min(rows, cols);
  const g = new Float64Array(n * n);
  // Gram of the smaller side: m·mᵀ when rows ≤ cols, else mᵀ·m.
  if (rows <= cols) {
    for (let i = 0; i < rows; i++) {
      for (let j = i; j < rows; j++) {
        let s = 0;
        for (let k = 0; k < cols; k++) s += m[i * cols + k] * m[j * cols + k];
        g[i * n + j] = g[j * n + i] = s;
      }
    }
  } else {
    const col = new Float64Array(rows * cols);
    for (let i = 0; i < rows; i++) for (let k = 0; k < cols; k++) col[k * rows + i] = m[i * cols + k];
    for (let i = 0; i < cols; i++) {
      for (let j = i; j < cols; j++) {
        let s = 0;
        for (let k = 0; k < rows; k++) s += col[i * rows + k] * col[j * rows + k];
        g[i * n + j] = g[j * n + i] = s;
      }
    }
  }
  return symmetricEigenvalues(g, n).map((x) => Math.sqrt(Math.max(0, x)));
}

/** Singular values (descending, r of them) of s·B·A with A [r, in] and B [out, r]. */
export function lowRankSingularValues(A: ArrayLike<number>, B: ArrayLike<number>, r: number, inF: number, out: number, s: number): Float64Array {
  // Modified Gram–Schmidt on A's rows: A = R'·Q with Q's rows orthonormal (R' lower triangular, = Rᵀ).
  const q = Float64Array.from(A as ArrayLike<number>);
  const R = new Float64Array(r * r);
  for (let i = 0; i < r; i++) {
    for (let j = 0; j < i; j++) {
      let dot = 0;
      for (let k = 0; k < inF; k++) dot += q[i * inF + k] * q[j * inF + k];
      R[i * r + j] = dot;
      for (let k = 0; k < inF; k++) q[i * inF + k] -= dot * q[j * inF + k];
    }
    let norm = 0;
    for (let k = 0; k < inF; k++) norm += q[i * inF + k] * q[i * inF + k];
    norm = Math.sqrt(norm);
    R[i * r + i] = norm;
    if (norm > 0) for (let k = 0; k < inF; k++) q[i * inF + k] /= norm;
  }
  // s·B·A = (s·B·R')·Q: the singular values of the out × r matrix s·B·R'.
  const m = new Float64Array(out * r);
  for (let o = 0; o < out; o++) {
    for (let j = 0; j < r; j++) {
      let t = 0;
      for (let i = j; i < r; i++) t += B[o * r + i] * R[i * r + j];
      m[o * r + j] = s * t;
    }
  }
  return singularValues(m, out, r);
}

/** exp(entropy of σᵢ/Σσ): 1 for a rank-1 change, n for n equal singular values (Roy and Vetterli's effective rank). */
export function effectiveRank(sv: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < sv.length; i++) sum += sv[i];
  if (sum === 0) return 0;
  let h = 0;
  for (let i = 0; i < sv.length; i++) {
    const p = sv[i] / sum;
    if (p > 0) h -= p * Math.log(p);
  }
  return Math.exp(h);
}
