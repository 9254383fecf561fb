// e^z on four f32 lanes: the softmax weights of attention and the GeGLU activation.

/**
 * e^z for four f32 lanes with z in [−87, 88] (callers clamp): e^r·2^n, |r| ≤ ln2/2, Taylor to r⁷
 * (relative error < 1e-8 before the f32 rounding). NaN stays NaN.
 */
@inline export function expf4(z: v128): v128 {
  // n = nearest(z·log2 e) by adding 1.5·2^23: the sum's low mantissa bits are n (ties to even).
  const t = f32x4.add(f32x4.mul(z, f32x4.splat(1.4426950408889634)), f32x4.splat(12582912));
  const n = f32x4.sub(t, f32x4.splat(12582912));
  // ln 2 in two parts; n·0.693359375 is exact for |n| ≤ 128.
  const r = f32x4.sub(f32x4.sub(z, f32x4.mul(n, f32x4.splat(0.693359375))), f32x4.mul(n, f32x4.splat(-2.12194440e-4)));
  let p = f32x4.splat(1.0 / 5040);
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.0 / 720));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.0 / 120));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.0 / 24));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.0 / 6));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(0.5));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1));
  // 2^n: n + 127 into the exponent field (t's low bits hold n + 0x400000 for the magic constant).
  return f32x4.mul(p, i32x4.shl(i32x4.sub(t, i32x4.splat(0x4b400000 - 127)), 23));
}
