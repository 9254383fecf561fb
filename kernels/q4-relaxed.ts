// int4 rows against i8 activation codes with relaxed SIMD (built into build/kernels-relaxed.wasm
// only). i16x8.relaxed_dot_i8x16_i7x16_s multiplies 16 signed bytes by 16 bytes in 0..127 and
// adds adjacent pairs: with the unsigned nibbles (0..15) as the 7-bit operand its result is exact
// on every engine (x64 pmaddubsw cannot saturate: 2·127·15 < 32767), and it does twice the work
// of i32x4.dot_i16x8_s per instruction. (i32x4.relaxed_dot_i8x16_i7x16_add_s is not used: in
// Node 20's V8 11.3 the baseline compiler's code returns twice the sum, and the optimizing
// compiler's is pmaddubsw + pmaddwd + paddd, no faster than the i16 dot and folding here.)
//
// Activation layout per full block of 32 (written by quantizeQ8I8): the 16 codes of the even
// elements, then the 16 of the odd ones, as i8: a block's 16 nibble bytes give the even elements
// in their low nibbles and the odd ones in their high nibbles, in the same order. corr holds one
// i32 per block, 8·Σ codes, so Σ (nibble − 8)·code = Σ nibble·code − corr. A partial last block
// is natural order, zero-padded to 32. The codes are the Q8_0 rule of kernels/q8.ts.
import { scales4, scaleAt, isum, blockScale, codes4, code } from './q8';
import { hsum, hsum4 } from './dot';
import { nibble } from './decode';

/** Quantize x[cols] into i8 codes q (split layout above), block scales ds (f32) and corr (i32). */
export function quantizeQ8I8(x: usize, cols: i32, q: usize, ds: usize, corr: usize): void {
  const full = cols & ~31;
  let b0 = 0;
  for (; b0 < full; b0 += 32) {
    const xp = x + (<usize>b0 << 2);
    const vid = f32x4.splat(blockScale(xp, 32, ds + (<usize>(b0 >> 5) << 2)));
    // 32 codes in natural order as two i8x16, summed on the way for corr.
    const a0 = codes4(xp, vid), a1 = codes4(xp + 16, vid), a2 = codes4(xp + 32, vid), a3 = codes4(xp + 48, vid);
    const a4 = codes4(xp + 64, vid), a5 = codes4(xp + 80, vid), a6 = codes4(xp + 96, vid), a7 = codes4(xp + 112, vid);
    const sum = i32x4.add(i32x4.add(i32x4.add(a0, a1), i32x4.add(a2, a3)), i32x4.add(i32x4.add(a4, a5), i32x4.add(a6, a7)));
    const lo = i8x16.narrow_i16x8_s(i16x8.narrow_i32x4_s(a0, a1), i16x8.narrow_i32x4_s(a2, a3));
    const hi = i8x16.narrow_i16x8_s(i16x8.narrow_i32x4_s(a4, a5), i16x8.narrow_i32x4_s(a6, a7));
    const qp = q + <usize>b0;
    v128.store(qp, v128.shuffle<i8>(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30));
    v128.store(qp, v128.shuffle<i8>(lo, hi, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31), 16);
    store<i32>(corr + (<usize>(b0 >> 5) << 2), isum(sum) << 3);
  }
  if (b0 < cols) {
    const xp = x + (<usize>b0 << 2);
    const n = cols - b0;
    const id = blockScale(xp, n, ds + (<usize>(b0 >> 5) << 2));
    for (let j = 0; j < 32; j++) store<i8>(q + <usize>(b0 + j), j < n ? <i8>code(load<f32>(xp + (<usize>j << 2)), id) : 0);
  }
}

/** i16x8 partial sums of Σ nibble·code over one block: b = its 16 nibble bytes, e/o = even/odd codes. */
@inline function blockSum(b: v128, e: v128, o: v128): v128 {
  const m = i8x16.splat(15);
  return blockSumUnpacked(v128.and(b, m), v128.and(i16x8.shr_u(b, 4), m), e, o);
}

/**
 * Four blocks' i16x8 partial sums → i32x4 of their totals. A lane is at most 2·2·127·15 = 7 620 in
 * magnitude, so four of them still fit i16 (30 480): the lanes are folded pairwise in i16 with
 * two rounds of interleaving and widened once, instead of widening each block.
 */
@inline function fold4(a: v128, b: v128, c: v128, d: v128): v128 {
  const ab = i16x8.add(v128.shuffle<i64>(a, b, 0, 2), v128.shuffle<i64>(a, b, 1, 3));
  const cd = i16x8.add(v128.shuffle<i64>(c, d, 0, 2), v128.shuffle<i64>(c, d, 1, 3));
  return i32x4.extadd_pairwise_i16x8_s(i16x8.add(v128.shuffle<i32>(ab, cd, 0, 2, 4, 6), v128.shuffle<i32>(ab, cd, 1, 3, 5, 7)));
}

/**
 * Two int4 rows (w1 = w0 + stride, scales sc0 + scs) against the same codes; sums to out and
 * out + os (stride 0 with os 0 computes one row). Four blocks per step: their sums are folded
 * into one i32 vector, corrected and scaled with one convert and two multiplies.
 */
export function dotQ4x2I8(w0: usize, stride: usize, q: usize, ds: usize, corr: usize, sc0: usize, scs: usize, per: i32, cols: i32, out: usize, os: usize): void {
  const w1 = w0 + stride, sc1 = sc0 + scs;
  const nb = cols >> 5, nb4 = nb & ~3;
  let acc0 = f32x4.splat(0), acc1 = f32x4.splat(0);
  let k = 0;
  for (; k < nb4; k += 4) {
    const wo = <usize>k << 4, qp = q + (<usize>k << 5);
    const e0 = v128.load(qp), o0 = v128.load(qp, 16), e1 = v128.load(qp, 32), o1 = v128.load(qp, 48);
    const e2 = v128.load(qp, 64), o2 = v128.load(qp, 80), e3 = v128.load(qp, 96), o3 = v128.load(qp, 112);
    const a = w0 + wo, b = w1 + wo;
    const p = fold4(blockSum(v128.load(a), e0, o0), blockSum(v128.load(a, 16), e1, o1), blockSum(v128.load(a, 32), e2, o2), blockSum(v128.load(a, 48), e3, o3));
    const u = fold4(blockSum(v128.load(b), e0, o0), blockSum(v128.load(b, 16), e1, o1), blockSum(v128.load(b, 32), e2, o2), blockSum(v128.load(b, 48), e3, o3));
    const c = v128.load(corr + (<usize>k << 2)), d = v128.load(ds + (<usize>k << 2));
    acc0 = f32x4.add(acc0, f32x4.mul(f32x4.convert_i32x4_s(i32x4.sub(p, c)), f32x4.mul(scales4(sc0, k, per), d)));
    acc1 = f32x4.add(acc1, f32x4.mul(f32x4.convert_i32x4_s(i32x4.sub(u, c)), f32x4.mul(scales4(sc1, k, per), d)));
  }
  let t0 = hsum(acc0), t1 = hsum(acc1);
  for (; k < nb; k++) {
    const wo = <usize>k << 4, qp = q + (<usize>k << 5);
    const e = v128.load(qp), o = v128.load(qp, 16);
    const c = load<i32>(corr + (<usize>k << 2)), d = load<f32>(ds + (<usize>k << 2));
    t0 += <f32>(isum(i32x4.extadd_pairwise_i16x8_s(blockSum(v128.load(w0 + wo), e, o))) - c) * (scaleAt(sc0, k, per) * d);
    t1 += <f32>(isum(i32x4.extadd_pairwise_i16x8_s(blockSum(v128.load(w1 + wo), e, o))) - c) * (scaleAt(sc1, k, per) * d);
  }
  if ((cols & 31) != 0) {
    t0 += tailQ4(w0, q, ds, sc0, per, cols);
    t1 += tailQ4(w1, q, ds, sc1, per, cols);
  }
  store<f32>(out, t0);
  store<f32>(out + os, t1);
}

/**
 * int4 row → its nibbles as bytes, per full block the 16 even elements then the 16 odd ones (the
 * 7-bit operands of blockSum's dot products, unpacked once per row for the GEMM's many tokens).
 */
export function unpackNibbles(src: usize, cols: i32, dst: usize): void {
  const m = i8x16.splat(15);
  for (let k = 0, nb = cols >> 5; k < nb; k++) {
    const b = v128.load(src + (<usize>k << 4));
    v128.store(dst + (<usize>k << 5), v128.and(b, m));
    v128.store(dst + (<usize>k << 5), v128.and(i16x8.shr_u(b, 4), m), 16);
  }
}

/** i16x8 partial sums of one block from unpacked nibbles (lo, hi) and codes (e, o). */
@inline function blockSumUnpacked(lo: v128, hi: v128, e: v128, o: v128): v128 {
  // Constant condition: the baseline build compiles nothing here (no caller reaches it there).
  if (!ASC_FEATURE_RELAXED_SIMD) return unreachable();
  return i16x8.add(i16x8.relaxed_dot_i8x16_i7x16_s(e, lo), i16x8.relaxed_dot_i8x16_i7x16_s(o, hi));
}

/**
 * The GEMM's grouped layout, in place over the first 4·groups full blocks of a row of i8 codes
 * or unpacked nibbles (split layout: per block its 16 even elements, then its 16 odd ones): per
 * group of four blocks, vector v (0..3) holds bytes 4v..4v+3 of each block's even half, vector
 * 4 + v the same of the odd halves. Four bytes of every block per vector: a dot product of two
 * such rows leaves block j's partial sums in i16 lanes 2j and 2j + 1, so a group's eight dot
 * products add up in one register and a single widening gives the four blocks' totals.
 */
export function interleave4(p: usize, groups: i32): void {
  for (let g = 0; g < groups; g++, p += 128) {
    const e0 = v128.load(p), e1 = v128.load(p, 32), e2 = v128.load(p, 64), e3 = v128.load(p, 96);
    const o0 = v128.load(p, 16), o1 = v128.load(p, 48), o2 = v128.load(p, 80), o3 = v128.load(p, 112);
    transpose4(p, e0, e1, e2, e3);
    transpose4(p + 64, o0, o1, o2, o3);
  }
}

/**
 * A grouped token's corrections (after interleave4): per group, one i16 lane per lane of the
 * tile's sums, −8·Σ of the codes that lane multiplies (16 of them: |value| ≤ 16 256), stored over
 * the group's four i32 block corrections. A tile's sum that starts from them ends at
 * Σ (nibble − 8)·code per lane, at most 16·8·127 = 16 256 in magnitude: exact in i16, whatever the
 * wrap-arounds on the way.
 */
export function groupCorrections(q: usize, corr: usize, groups: i32): void {
  for (let g = 0; g < groups; g++, q += 128) {
    let c = i16x8.extadd_pairwise_i8x16_s(v128.load(q));
    for (let v: usize = 16; v < 128; v += 16) c = i16x8.add(c, i16x8.extadd_pairwise_i8x16_s(v128.load(q + v)));
    v128.store(corr + (<usize>g << 4), i16x8.mul(c, i16x8.splat(-8)));
  }
}

/** The 4 × 4 transpose of 32-bit lanes of a..d, stored as four vectors at p, stride bytes apart (a constant: 16 here, 64 for the i16 GEMM). */
@inline export function transpose4(p: usize, a: v128, b: v128, c: v128, d: v128, stride: usize = 16): void {
  const t0 = v128.shuffle<i32>(a, b, 0, 4, 1, 5), t1 = v128.shuffle<i32>(a, b, 2, 6, 3, 7);
  const t2 = v128.shuffle<i32>(c, d, 0, 4, 1, 5), t3 = v128.shuffle<i32>(c, d, 2, 6, 3, 7);
  v128.store(p, v128.shuffle<i64>(t0, t2, 0, 2));
  v128.store(p + stride, v128.shuffle<i64>(t0, t2, 1, 3));
  v128.store(p + 2 * stride, v128.shuffle<i64>(t1, t3, 0, 2));
  v128.store(p + 3 * stride, v128.shuffle<i64>(t1, t3, 1, 3));
}

/** s + the i16 pair sums of codes a × nibble bytes w. */
@inline function dot7(s: v128, a: v128, w: v128): v128 {
  if (!ASC_FEATURE_RELAXED_SIMD) return unreachable();
  return i16x8.add(s, i16x8.relaxed_dot_i8x16_i7x16_s(a, w));
}

/** acc + the group's block totals (i16 pair sums, corrections included, widened) × scales: one fused step. */
@inline function scaleGroup(s: v128, sc: v128, acc: v128): v128 {
  if (!ASC_FEATURE_RELAXED_SIMD) return unreachable();
  return f32x4.relaxed_madd(f32x4.convert_i32x4_s(i32x4.extadd_pairwise_i16x8_s(s)), sc, acc);
}

/**
 * The GEMM tile over the grouped blocks: 4 unpacked rows (u, us bytes apart) × 2 tokens (codes
 * from q0, block scales from d0, lane corrections from c0 (groupCorrections); the second token ts
 * bytes after the first, ts = 0 repeats it). sx holds each row's scale per block (sxs bytes apart).
 * A group's eight dot products per row and token (lanes of at most 2·127·15 = 3 810) add up in i16
 * from the token's corrections, are widened once into the four blocks' totals and scaled by their
 * four row × token scales into one f32x4 per row and token, summed across at the end. Sums for
 * rows r..r+3: out (token 0) and out + os (token 1).
 */
export function tile4x2G(u: usize, us: usize, q0: usize, d0: usize, c0: usize, ts: usize, sx: usize, sxs: usize, groups: i32, out: usize, os: usize): void {
  const u1 = u + us, u2 = u1 + us, u3 = u2 + us, q1 = q0 + ts;
  let f00 = f32x4.splat(0), f01 = f32x4.splat(0), f10 = f32x4.splat(0), f11 = f32x4.splat(0);
  let f20 = f32x4.splat(0), f21 = f32x4.splat(0), f30 = f32x4.splat(0), f31 = f32x4.splat(0);
  for (let g = 0; g < groups; g++) {
    const go = <usize>g << 7;
    // Each sum starts from its token's lane corrections (groupCorrections): −8·Σ codes per lane.
    const ko = <usize>g << 4, k0 = v128.load(c0 + ko), k1 = v128.load(c0 + ts + ko);
    let s00 = k0, s01 = k1, s10 = k0, s11 = k1, s20 = k0, s21 = k1, s30 = k0, s31 = k1;
    for (let v: usize = go; v < go + 128; v += 16) {
      const a0 = v128.load(q0 + v), a1 = v128.load(q1 + v);
      let w = v128.load(u + v);
      s00 = dot7(s00, a0, w); s01 = dot7(s01, a1, w);
      w = v128.load(u1 + v);
      s10 = dot7(s10, a0, w); s11 = dot7(s11, a1, w);
      w = v128.load(u2 + v);
      s20 = dot7(s20, a0, w); s21 = dot7(s21, a1, w);
      w = v128.load(u3 + v);
      s30 = dot7(s30, a0, w); s31 = dot7(s31, a1, w);
    }
    const e0 = v128.load(d0 + ko), e1 = v128.load(d0 + ts + ko);
    let w = v128.load(sx + ko);
    f00 = scaleGroup(s00, f32x4.mul(w, e0), f00); f01 = scaleGroup(s01, f32x4.mul(w, e1), f01);
    w = v128.load(sx + sxs + ko);
    f10 = scaleGroup(s10, f32x4.mul(w, e0), f10); f11 = scaleGroup(s11, f32x4.mul(w, e1), f11);
    w = v128.load(sx + 2 * sxs + ko);
    f20 = scaleGroup(s20, f32x4.mul(w, e0), f20); f21 = scaleGroup(s21, f32x4.mul(w, e1), f21);
    w = v128.load(sx + 3 * sxs + ko);
    f30 = scaleGroup(s30, f32x4.mul(w, e0), f30); f31 = scaleGroup(s31, f32x4.mul(w, e1), f31);
  }
  v128.store(out, hsum4(f00, f10, f20, f30));
  v128.store(out + os, hsum4(f01, f11, f21, f31));
}

/**
 * One unpacked row against one token over the full blocks k0..k1 left outside the groups (split
 * layout), scales per block from sxr: their scaled sum.
 */
export function restQ4(ur: usize, qt: usize, dt: usize, ct: usize, sxr: usize, k0: i32, k1: i32): f32 {
  let acc: f32 = 0;
  for (let k = k0; k < k1; k++) {
    const o = <usize>k << 5, ko = <usize>k << 2;
    const p = isum(i32x4.extadd_pairwise_i16x8_s(blockSumUnpacked(v128.load(ur + o), v128.load(ur + o, 16), v128.load(qt + o), v128.load(qt + o, 16)))) - load<i32>(ct + ko);
    acc += <f32>p * (load<f32>(sxr + ko) * load<f32>(dt + ko));
  }
  return acc;
}

/** The partial last block of one int4 row (natural-order codes): its scaled sum, 0 if none. */
export function tailQ4(w: usize, q: usize, ds: usize, sc: usize, per: i32, cols: i32): f32 {
  const nb = cols >> 5, b0 = nb << 5;
  if (b0 >= cols) return 0;
  let p = 0;
  for (let i = b0; i < cols; i++) p += nibble(w, i) * <i32>load<i8>(q + <usize>i);
  return <f32>p * (scaleAt(sc, nb, per) * load<f32>(ds + (<usize>nb << 2)));
}
