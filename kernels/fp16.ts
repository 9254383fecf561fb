// fp16 numerics (src/fp16/): round f32 values to the nearest fp16 value in place, kept as f32.
// (x + c) − c with c = 2^(e+13) rounds x to a multiple of fp16's ulp at x's exponent e, ties to
// even, in one exactly rounded f32 add; below 2^-14 the quantum is fixed (c = 2^-1 → 2^-24).
// Results past 65504 become ±inf; the sign of zero is kept. Bit-identical to roundF16Bits().

/** Rounds p[0..n) in place; returns the index of the first non-finite result, or -1. */
export function roundF16(p: usize, n: i32): i32 {
  const expMask = i32x4.splat(0x7f800000), signMask = i32x4.splat(0x80000000);
  const lo = i32x4.splat(113 << 23), hi = i32x4.splat(200 << 23), thirteen = i32x4.splat(13 << 23);
  const maxHalf = f32x4.splat(65504), inf = i32x4.splat(0x7f800000);
  let first = -1;
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const a = p + (<usize>i << 2);
    const x = v128.load(a);
    const sign = v128.and(x, signMask);
    // Exponent clamped to [113, 200] (inf/NaN and huge values end as inf either way), + 13.
    const e = i32x4.add(i32x4.min_s(i32x4.max_s(v128.and(x, expMask), lo), hi), thirteen);
    const c = v128.or(e, sign);
    let y = f32x4.sub(f32x4.add(x, c), c);
    // Past fp16's range: ±inf (NaN compares false and passes through).
    y = v128.bitselect(v128.or(inf, sign), y, f32x4.gt(f32x4.abs(y), maxHalf));
    y = v128.or(y, sign);
    v128.store(a, y);
    if (first < 0 && v128.any_true(i32x4.eq(v128.and(y, expMask), expMask))) {
      for (let j = 0; j < 4; j++) {
        if ((load<u32>(a + (<usize>j << 2)) & 0x7f800000) == 0x7f800000) { first = i + j; break; }
      }
    }
  }
  for (; i < n; i++) {
    const a = p + (<usize>i << 2);
    const x = load<f32>(a);
    const bits = reinterpret<u32>(x);
    const sign = bits & 0x80000000;
    const e = ((<u32>min(max(<i32>(bits & 0x7f800000), 113 << 23), 200 << 23)) + (13 << 23)) | sign;
    const c = reinterpret<f32>(e);
    let y = (x + c) - c;
    if (Mathf.abs(y) > 65504) y = reinterpret<f32>(0x7f800000 | sign);
    const r = reinterpret<u32>(y) | sign;
    store<u32>(a, r);
    if (first < 0 && (r & 0x7f800000) == 0x7f800000) first = i;
  }
  return first;
}
