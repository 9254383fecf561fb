// Rounding f32 values to the nearest IEEE binary16 value (ties to even), kept as f32: what an
// fp16 accelerator holds between ops. Overflow becomes ±Infinity as on the hardware; NaN stays NaN.
// Works on the f32 bit pattern, so no double rounding through f64.

export const FP16_MAX = 65504;

/** f32 bits -> f32 bits of the nearest f16 value. */
export function roundF16Bits(w: number): number {
  const exp = (w >>> 23) & 0xff;
  if (exp >= 113) {
    // Normal f16 range and above: drop 13 mantissa bits with round-to-nearest-even.
    if (exp === 0xff) return w; // ±Inf, NaN
    const rem = w & 0x1fff;
    let r = (w - rem) >>> 0;
    if (rem > 0x1000 || (rem === 0x1000 && (r & 0x2000) !== 0)) r = (r + 0x2000) >>> 0;
    // The carry may reach 2^16 (65520 and up round there): that is past f16's range.
    if (((r >>> 23) & 0xff) > 142) return ((r & 0x80000000) | 0x7f800000) >>> 0;
    return r;
  }
  // Subnormal f16 range: a multiple of 2^-24 (h quanta), found with integer rounding.
  const sign = (w & 0x80000000) >>> 0;
  const shift = 126 - exp; // >= 14
  if (exp === 0 || shift > 24) return sign; // at most half the smallest subnormal (or an f32 subnormal)
  const m = (w & 0x7fffff) | 0x800000;
  let h = m >>> shift;
  const rem = m & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rem > half || (rem === half && (h & 1) !== 0)) h++;
  if (h === 0) return sign;
  // h · 2^-24 as an f32: normalise h (at most 1024, so exact).
  const e = 31 - Math.clz32(h);
  return (sign | ((e - 24 + 127) << 23) | ((h << (23 - e)) & 0x7fffff)) >>> 0;
}

const scalarF = new Float32Array(1);
const scalarU = new Uint32Array(scalarF.buffer);

/** One value rounded to f16 precision (the f32 rounding of x comes first). */
export function f16round(x: number): number {
  scalarF[0] = x;
  scalarU[0] = roundF16Bits(scalarU[0]);
  return scalarF[0];
}

/**
 * Round a[0..n) to f16 precision in place. Returns the index of the first non-finite result, or
 * -1: the caller decides whether that is an error.
 */
export function roundToF16(a: Float32Array, n = a.length): number {
  const u = new Uint32Array(a.buffer, a.byteOffset, n);
  let firstBad = -1;
  for (let i = 0; i < n; i++) {
    const r = roundF16Bits(u[i]);
    u[i] = r;
    if (firstBad < 0 && (r & 0x7f800000) === 0x7f800000) firstBad = i;
  }
  return firstBad;
}

/** Index of the first NaN or ±Inf in a[0..n), or -1. */
export function firstNonFinite(a: Float32Array, n = a.length): number {
  for (let i = 0; i < n; i++) {
    const v = a[i];
    if (v - v !== 0) return i;
  }
  return -1;
}
