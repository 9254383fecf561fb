// Half-precision lanes to f32, in registers. Both are exact (every bf16/f16 value is an f32).

/** 4 bf16 at p → f32x4: the 16 bits become the high half of the f32. */
@inline export function bf16x4(p: usize): v128 {
  return i32x4.shl(v128.load16x4_u(p), 16);
}

/**
 * 4 f16 at p → f32x4. Exponent and mantissa shifted into place and scaled by 2^112 re-bias the
 * exponent and turn f16 subnormals into the right f32 values in one multiply; Inf/NaN (exponent 31)
 * get the f32 all-ones exponent instead; then the sign.
 */
@inline export function f16x4(p: usize): v128 {
  const h = v128.load16x4_u(p);
  const abs = v128.and(h, i32x4.splat(0x7fff));
  const shifted = i32x4.shl(abs, 13);
  const scaled = f32x4.mul(shifted, f32x4.splat(<f32>5.192296858534828e33));
  const infnan = i32x4.gt_s(abs, i32x4.splat(0x7bff));
  const special = v128.or(shifted, i32x4.splat(0x7f800000));
  const mag = v128.bitselect(special, scaled, infnan);
  return v128.or(mag, i32x4.shl(v128.and(h, i32x4.splat(0x8000)), 16));
}

/**
 * 4 finite f16 at p → f32x4 in 4 ops: sign-extended lanes shifted left 13 put the sign at bit 31
 * and exponent + mantissa at bits 13–27 (the mask drops the rest); × 2^112 re-biases, subnormals
 * included. An f16 Inf/NaN would come out as ±65536-ish: only for matrices the host found finite.
 */
@inline export function f16x4Finite(p: usize): v128 {
  const bits = v128.and(i32x4.shl(v128.load16x4_s(p), 13), i32x4.splat(0x8fffe000));
  return f32x4.mul(bits, f32x4.splat(<f32>5.192296858534828e33));
}

@inline export function bf16(p: usize): f32 {
  return reinterpret<f32>(<u32>load<u16>(p) << 16);
}

export function f16(p: usize): f32 {
  const h = <u32>load<u16>(p);
  const abs = h & 0x7fff;
  let mag: f32;
  if (abs > 0x7bff) mag = reinterpret<f32>((abs << 13) | 0x7f800000);
  else mag = reinterpret<f32>(abs << 13) * <f32>5.192296858534828e33;
  return (h & 0x8000) != 0 ? -mag : mag;
}

/** 8 int4 codes (4 bytes at p, low nibble first) widened to 8 i16 lanes holding code − 8. */
@inline export function int4x8(p: usize): v128 {
  const b = v128.load32_zero(p);
  const lo = v128.and(b, i8x16.splat(0x0f));
  const hi = i8x16.shr_u(b, 4);
  const codes = i8x16.shuffle(lo, hi, 0, 16, 1, 17, 2, 18, 3, 19, 0, 0, 0, 0, 0, 0, 0, 0);
  return i16x8.sub(i16x8.extend_low_i8x16_u(codes), i16x8.splat(8));
}
