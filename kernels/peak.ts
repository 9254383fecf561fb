// Compute-peak probe (build/peak-relaxed.wasm): the multiply-accumulate rate of the integer
// dot products the q8 kernels are made of, with no memory traffic, for stating a GEMM's GMAC/s
// against what the core can do (tools/profile/peak.mjs). Eight independent accumulators cover
// the instructions' latency; the weight vector changes every iteration (an add per eight dot
// products) so nothing can be hoisted out of the loop.

/** `iters` rounds of 8 × i16x8.relaxed_dot_i8x16_i7x16_s + i16x8.add: 128 MACs per round. */
export function dot7(iters: i32, seed: i32): i32 {
  // Operands from the argument, not constants: V8 would rematerialize constants inside the loop.
  const one = i8x16.splat(<i8>(seed & 1)), x0 = i8x16.splat(<i8>seed), x1 = i8x16.add(x0, one), x2 = i8x16.add(x1, one), x3 = i8x16.add(x2, one);
  let w = i8x16.add(x3, one);
  let s0 = i16x8.splat(0), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
  for (let i = 0; i < iters; i++) {
    w = i8x16.add(w, one);
    s0 = i16x8.add(s0, i16x8.relaxed_dot_i8x16_i7x16_s(x0, w)); s1 = i16x8.add(s1, i16x8.relaxed_dot_i8x16_i7x16_s(x1, w)); s2 = i16x8.add(s2, i16x8.relaxed_dot_i8x16_i7x16_s(x2, w)); s3 = i16x8.add(s3, i16x8.relaxed_dot_i8x16_i7x16_s(x3, w));
    s4 = i16x8.add(s4, i16x8.relaxed_dot_i8x16_i7x16_s(w, x0)); s5 = i16x8.add(s5, i16x8.relaxed_dot_i8x16_i7x16_s(w, x1)); s6 = i16x8.add(s6, i16x8.relaxed_dot_i8x16_i7x16_s(w, x2)); s7 = i16x8.add(s7, i16x8.relaxed_dot_i8x16_i7x16_s(w, x3));
  }
  const s = i16x8.add(i16x8.add(i16x8.add(s0, s1), i16x8.add(s2, s3)), i16x8.add(i16x8.add(s4, s5), i16x8.add(s6, s7)));
  return i16x8.extract_lane_s(s, 0);
}

/** `iters` rounds of 8 × i32x4.dot_i16x8_s + i32x4.add: 64 MACs per round. */
export function dot16(iters: i32, seed: i32): i32 {
  // Operands from the argument, not constants: V8 would rematerialize constants inside the loop.
  const one = i16x8.splat(<i16>(seed & 1)), x0 = i16x8.splat(<i16>seed), x1 = i16x8.add(x0, one), x2 = i16x8.add(x1, one), x3 = i16x8.add(x2, one);
  let w = i16x8.add(x3, one);
  let s0 = i32x4.splat(0), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
  for (let i = 0; i < iters; i++) {
    w = i16x8.add(w, one);
    s0 = i32x4.add(s0, i32x4.dot_i16x8_s(x0, w)); s1 = i32x4.add(s1, i32x4.dot_i16x8_s(x1, w)); s2 = i32x4.add(s2, i32x4.dot_i16x8_s(x2, w)); s3 = i32x4.add(s3, i32x4.dot_i16x8_s(x3, w));
    s4 = i32x4.add(s4, i32x4.dot_i16x8_s(w, x0)); s5 = i32x4.add(s5, i32x4.dot_i16x8_s(w, x1)); s6 = i32x4.add(s6, i32x4.dot_i16x8_s(w, x2)); s7 = i32x4.add(s7, i32x4.dot_i16x8_s(w, x3));
  }
  const s = i32x4.add(i32x4.add(i32x4.add(s0, s1), i32x4.add(s2, s3)), i32x4.add(i32x4.add(s4, s5), i32x4.add(s6, s7)));
  return i32x4.extract_lane(s, 0);
}
