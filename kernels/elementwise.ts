// Small per-element ops. They follow the reference backend's f64 arithmetic so their outputs
// match it (nearly always bit for bit), except geluMul: f32 arithmetic, within a few 1e-6
// relative of the reference (it is a tenth of a large model's prefill in f64). The
// host splits rmsNorm (by rows), rope (by tokens) and geluMul over the pool when a prefill makes
// them large.
import { decodeRow } from './decode';
import { colsOf } from './matrix';
import { expf4 } from './expf';

export function rmsNorm(x: usize, rows: i32, dim: i32, gain: usize, eps: f64, out: usize): void {
  for (let r = 0; r < rows; r++) {
    const o = <usize>r * <usize>dim << 2;
    // Σ x² in f64, four lanes (the reference sums in order: the two differ in the last f64 bits).
    let s0 = f64x2.splat(0), s1 = f64x2.splat(0);
    let i = 0;
    for (; i + 4 <= dim; i += 4) {
      const v = v128.load(x + o + (<usize>i << 2));
      const a = f64x2.promote_low_f32x4(v), b = f64x2.promote_low_f32x4(v128.shuffle<i32>(v, v, 2, 3, 0, 1));
      s0 = f64x2.add(s0, f64x2.mul(a, a));
      s1 = f64x2.add(s1, f64x2.mul(b, b));
    }
    const s = f64x2.add(s0, s1);
    let ss = f64x2.extract_lane(s, 0) + f64x2.extract_lane(s, 1);
    for (; i < dim; i++) {
      const v = <f64>load<f32>(x + o + (<usize>i << 2));
      ss += v * v;
    }
    const inv = 1 / Math.sqrt(ss / <f64>dim + eps);
    // x·inv·gain per element in f64, as the reference, two lanes at a time.
    const vi = f64x2.splat(inv);
    i = 0;
    for (; i + 2 <= dim; i += 2) {
      const p = o + (<usize>i << 2);
      const xv = f64x2.promote_low_f32x4(v128.load64_zero(x + p));
      const g = f64x2.promote_low_f32x4(v128.load64_zero(gain + (<usize>i << 2)));
      v128.store64_lane(out + p, f32x4.demote_f64x2_zero(f64x2.mul(f64x2.mul(xv, vi), g)), 0);
    }
    for (; i < dim; i++) {
      const p = o + (<usize>i << 2);
      store<f32>(out + p, <f32>(<f64>load<f32>(x + p) * inv * <f64>load<f32>(gain + (<usize>i << 2))));
    }
  }
}

/**
 * Rows p0..p1 of a RoPE table: row p holds cos then sin of the angles f32(p·invFreq[j]), each
 * rounded to f32 as HF computes them (the host fills it once per position, for every layer).
 */
export function ropeTrig(invFreq: usize, half: i32, p0: i32, p1: i32, table: usize): void {
  for (let p = p0; p < p1; p++) {
    const row = table + ((<usize>p * <usize>half) << 3);
    for (let j = 0; j < half; j++) {
      const angle = <f64><f32>(<f64>p * <f64>load<f32>(invFreq + (<usize>j << 2)));
      store<f32>(row + (<usize>j << 2), <f32>Math.cos(angle));
      store<f32>(row + (<usize>(j + half) << 2), <f32>Math.sin(angle));
    }
  }
}

/** Rotate-half RoPE in place, in f64 like the reference, with cos/sin from a ropeTrig table. */
export function rope(x: usize, T: i32, heads: i32, headDim: i32, pos0: i32, table: usize): void {
  const half = headDim >> 1;
  for (let t = 0; t < T; t++) {
    const cos = table + ((<usize>(pos0 + t) * <usize>half) << 3), sin = cos + (<usize>half << 2);
    for (let h = 0; h < heads; h++) {
      const o = x + ((<usize>t * <usize>heads + <usize>h) * <usize>headDim << 2);
      for (let j = 0; j < half; j++) {
        const pa = o + (<usize>j << 2), pb = o + (<usize>(j + half) << 2);
        const a = <f64>load<f32>(pa), b = <f64>load<f32>(pb);
        const c = <f64>load<f32>(cos + (<usize>j << 2)), s = <f64>load<f32>(sin + (<usize>j << 2));
        store<f32>(pa, <f32>(a * c - b * s));
        store<f32>(pb, <f32>(b * c + a * s));
      }
    }
  }
}

/**
 * out = gelu_tanh(gate) × up for elements i0..i1, four f32 lanes at a time. With z = −2u,
 * 0.5·x·(1 + tanh u) = x/(1 + e^z): the reference's value without its cancellation for very
 * negative u. f32 throughout: z carries a few roundings (relative error ≤ ~3e-6 in e^z for the
 * |z| ≤ 20 of |x| ≤ 5, less in the result wherever x > 0); e^z by Cody–Waite reduction and a
 * degree-7 polynomial. z is clamped to [−87, 88] (e^z stays a normal f32; above 88 the true
 * result is below 1e-37·|x·up| and is returned as 0).
 */
export function geluMul(gate: usize, up: usize, i0: i32, i1: i32, out: usize): void {
  let i = i0;
  for (; i + 4 <= i1; i += 4) {
    const o = <usize>i << 2;
    v128.store(out + o, gelu4(v128.load(gate + o), v128.load(up + o)));
  }
  for (; i < i1; i++) {
    const o = <usize>i << 2;
    store<f32>(out + o, f32x4.extract_lane(gelu4(f32x4.splat(load<f32>(gate + o)), f32x4.splat(load<f32>(up + o))), 0));
  }
}

/** gelu_tanh(x)·up for four f32 lanes. */
@inline function gelu4(x: v128, up: v128): v128 {
  // z = −2·sqrt(2/π)·(x + 0.044715·x³) = x·(A + B·x²).
  const z = f32x4.mul(x, f32x4.add(f32x4.splat(-1.5957691216057308), f32x4.mul(f32x4.splat(-0.07135481627260025), f32x4.mul(x, x))));
  const zc = f32x4.pmax(f32x4.splat(-87), f32x4.pmin(f32x4.splat(88), z)); // pmin/pmax: one instruction each
  const r = f32x4.div(f32x4.mul(x, up), f32x4.add(expf4(zc), f32x4.splat(1)));
  return v128.andnot(r, f32x4.gt(z, f32x4.splat(88)));
}

/**
 * exp for two f64 lanes in [−700, 80]: e^r·2^n, |r| ≤ ln2/2, Taylor to r⁹ (relative error < 1e-11:
 * the result is rounded to f32, 6e-8, so the three terms to r¹² bought nothing).
 */
@inline function exp2x(z: v128): v128 {
  const n = f64x2.nearest(f64x2.mul(z, f64x2.splat(1.4426950408889634)));
  const r = f64x2.sub(f64x2.sub(z, f64x2.mul(n, f64x2.splat(6.93147180369123816490e-1))), f64x2.mul(n, f64x2.splat(1.90821492927058770002e-10)));
  let p = f64x2.splat(1.0 / 362880);
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(1.0 / 40320));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(1.0 / 5040));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(1.0 / 720));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(1.0 / 120));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(1.0 / 24));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(1.0 / 6));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(0.5));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(1));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(1));
  // 2^n from its exponent bits.
  const bits = i64x2.shl(i64x2.add(i64x2.extend_low_i32x4_s(i32x4.trunc_sat_f64x2_s_zero(n)), i64x2.splat(1023)), 52);
  return f64x2.mul(p, bits);
}

/** Index of the first non-finite value (exponent all ones) of x[0..n), or −1. */
export function firstNonFinite(x: usize, n: i32): i32 {
  const m = i32x4.splat(0x7f800000);
  let i = 0;
  for (; i + 16 <= n; i += 16) {
    const o = x + (<usize>i << 2);
    const a = i32x4.eq(v128.and(v128.load(o), m), m), b = i32x4.eq(v128.and(v128.load(o, 16), m), m);
    const c = i32x4.eq(v128.and(v128.load(o, 32), m), m), d = i32x4.eq(v128.and(v128.load(o, 48), m), m);
    if (v128.any_true(v128.or(v128.or(a, b), v128.or(c, d)))) break;
  }
  for (; i < n; i++) if ((load<u32>(x + (<usize>i << 2)) & 0x7f800000) == 0x7f800000) return i;
  return -1;
}

/**
 * x = cap·tanh(x/cap) for elements i0..i1 (Gemma's final logit softcap), in f64 two lanes at a
 * time like the reference's Math.tanh: tanh y = (E − 1)/(E + 1) with E = exp(2y), and its series
 * y − y³/3 + 2y⁵/15 for |y| < 2^-9, where E − 1 would cancel.
 */
export function softcap(x: usize, i0: i32, i1: i32, cap: f64): void {
  const vc = f64x2.splat(cap);
  let i = i0;
  for (; i + 4 <= i1; i += 4) {
    const o = x + (<usize>i << 2);
    const v = v128.load(o);
    const lo = f32x4.demote_f64x2_zero(f64x2.mul(vc, tanh2(f64x2.div(f64x2.promote_low_f32x4(v), vc))));
    const hi = f32x4.demote_f64x2_zero(f64x2.mul(vc, tanh2(f64x2.div(f64x2.promote_low_f32x4(v128.shuffle<i32>(v, v, 2, 3, 0, 1)), vc))));
    v128.store(o, v128.shuffle<i64>(lo, hi, 0, 2));
  }
  for (; i < i1; i++) {
    const o = x + (<usize>i << 2);
    store<f32>(o, <f32>f64x2.extract_lane(f64x2.mul(vc, tanh2(f64x2.splat(<f64>load<f32>(o) / cap))), 0));
  }
}

/** tanh for two f64 lanes (relative error ~1e-11, below an f32 rounding). */
@inline function tanh2(y: v128): v128 {
  // 2y clamped: (E−1)/(E+1) is exactly ±1 beyond ±80 and exp stays normal above −700.
  const e = exp2x(f64x2.max(f64x2.splat(-700), f64x2.min(f64x2.splat(80), f64x2.add(y, y))));
  const one = f64x2.splat(1);
  const t = f64x2.div(f64x2.sub(e, one), f64x2.add(e, one));
  const y2 = f64x2.mul(y, y);
  const series = f64x2.mul(y, f64x2.add(one, f64x2.mul(y2, f64x2.add(f64x2.splat(-1.0 / 3), f64x2.mul(y2, f64x2.splat(2.0 / 15))))));
  return v128.bitselect(series, t, f64x2.lt(f64x2.abs(y), f64x2.splat(0.001953125)));
}

export function add(acc: usize, x: usize, n: i32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    v128.store(acc + o, f32x4.add(v128.load(acc + o), v128.load(x + o)));
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    store<f32>(acc + o, load<f32>(acc + o) + load<f32>(x + o));
  }
}

/**
 * acc[t, j] += Σᵢ x[t, i] · w[i, j] for t < T, i < k, j < n (x [T, k], w [k, n], acc [T, n], row-major):
 * a LoRA up-projection, with w = Bᵀ. Each output sums its k products in f32 (i ascending), then
 * adds once. Sixteen columns at a time: x[t, i] is splat once per four vectors of w's row i.
 */
export function addProduct(acc: usize, x: usize, T: i32, k: i32, w: usize, n: i32): void {
  for (let t = 0; t < T; t++) {
    const xr = x + (<usize>(t * k) << 2);
    const ar = acc + (<usize>(t * n) << 2);
    let j = 0;
    for (; j + 16 <= n; j += 16) {
      let s0 = f32x4.splat(0);
      let s1 = f32x4.splat(0);
      let s2 = f32x4.splat(0);
      let s3 = f32x4.splat(0);
      for (let i = 0; i < k; i++) {
        const xi = f32x4.splat(load<f32>(xr + (<usize>i << 2)));
        const wr = w + (<usize>(i * n + j) << 2);
        s0 = f32x4.add(s0, f32x4.mul(xi, v128.load(wr)));
        s1 = f32x4.add(s1, f32x4.mul(xi, v128.load(wr + 16)));
        s2 = f32x4.add(s2, f32x4.mul(xi, v128.load(wr + 32)));
        s3 = f32x4.add(s3, f32x4.mul(xi, v128.load(wr + 48)));
      }
      const o = ar + (<usize>j << 2);
      v128.store(o, f32x4.add(v128.load(o), s0));
      v128.store(o + 16, f32x4.add(v128.load(o + 16), s1));
      v128.store(o + 32, f32x4.add(v128.load(o + 32), s2));
      v128.store(o + 48, f32x4.add(v128.load(o + 48), s3));
    }
    for (; j + 4 <= n; j += 4) {
      let s = f32x4.splat(0);
      for (let i = 0; i < k; i++) s = f32x4.add(s, f32x4.mul(f32x4.splat(load<f32>(xr + (<usize>i << 2))), v128.load(w + (<usize>(i * n + j) << 2))));
      const o = ar + (<usize>j << 2);
      v128.store(o, f32x4.add(v128.load(o), s));
    }
    for (; j < n; j++) {
      let s: f32 = 0;
      for (let i = 0; i < k; i++) s += load<f32>(xr + (<usize>i << 2)) * load<f32>(w + (<usize>(i * n + j) << 2));
      store<f32>(ar + (<usize>j << 2), load<f32>(ar + (<usize>j << 2)) + s);
    }
  }
}

/** x *= s over n (one f32 rounding per element). */
export function scale(x: usize, n: i32, s: f32): void {
  const v = f32x4.splat(s);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    v128.store(x + o, f32x4.mul(v128.load(x + o), v));
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    store<f32>(x + o, load<f32>(x + o) * s);
  }
}

/** out = row `id` of the table × scale (one f32 rounding, as the reference). */
export function embedRow(d: usize, id: i32, scale: f32, out: usize): void {
  decodeRow(d, id, out);
  const cols = colsOf(d);
  const vs = f32x4.splat(scale);
  let i = 0;
  for (; i + 4 <= cols; i += 4) v128.store(out + (<usize>i << 2), f32x4.mul(v128.load(out + (<usize>i << 2)), vs));
  for (; i < cols; i++) store<f32>(out + (<usize>i << 2), load<f32>(out + (<usize>i << 2)) * scale);
}
