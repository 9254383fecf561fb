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
import { hsum } from './dot';
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
 * The GEMM tile: 4 unpacked rows (u, ws bytes apart) × 2 tokens (codes qs, scales and corrections
 * dss bytes apart), full blocks only; st[k] holds the 4 rows' scales of block k. Per block and
 * token, the rows' sums are folded into one vector: sums for rows r..r+3 go to out (token 0)
 * and out + os (token 1).
 */
export function tile4x2I8(u: usize, ws: usize, q0: usize, qs: usize, d0: usize, c0: usize, dss: usize, st: usize, cols: i32, out: usize, os: usize): void {
  const u1 = u + ws, u2 = u1 + ws, u3 = u2 + ws, q1 = q0 + qs, d1 = d0 + dss, c1 = c0 + dss;
  let acc0 = f32x4.splat(0), acc1 = f32x4.splat(0);
  for (let k = 0, nb = cols >> 5; k < nb; k++) {
    const wo = <usize>k << 5, ko = <usize>k << 2;
    const e0 = v128.load(q0 + wo), o0 = v128.load(q0 + wo, 16), e1 = v128.load(q1 + wo), o1 = v128.load(q1 + wo, 16);
    let l = v128.load(u + wo), h = v128.load(u + wo, 16);
    const p00 = blockSumUnpacked(l, h, e0, o0), p01 = blockSumUnpacked(l, h, e1, o1);
    l = v128.load(u1 + wo); h = v128.load(u1 + wo, 16);
    const p10 = blockSumUnpacked(l, h, e0, o0), p11 = blockSumUnpacked(l, h, e1, o1);
    l = v128.load(u2 + wo); h = v128.load(u2 + wo, 16);
    const p20 = blockSumUnpacked(l, h, e0, o0), p21 = blockSumUnpacked(l, h, e1, o1);
    l = v128.load(u3 + wo); h = v128.load(u3 + wo, 16);
    const p30 = blockSumUnpacked(l, h, e0, o0), p31 = blockSumUnpacked(l, h, e1, o1);
    const s4 = v128.load(st + (<usize>k << 4));
    const t0 = i32x4.sub(fold4(p00, p10, p20, p30), v128.load32_splat(c0 + ko));
    const t1 = i32x4.sub(fold4(p01, p11, p21, p31), v128.load32_splat(c1 + ko));
    acc0 = f32x4.add(acc0, f32x4.mul(f32x4.convert_i32x4_s(t0), f32x4.mul(s4, v128.load32_splat(d0 + ko))));
    acc1 = f32x4.add(acc1, f32x4.mul(f32x4.convert_i32x4_s(t1), f32x4.mul(s4, v128.load32_splat(d1 + ko))));
  }
  v128.store(out, acc0);
  v128.store(out + os, acc1);
}

/** The partial last block of one int4 row (natural-order codes): its scaled sum, 0 if none. */
export function tailQ4(w: usize, q: usize, ds: usize, sc: usize, per: i32, cols: i32): f32 {
  const nb = cols >> 5, b0 = nb << 5;
  if (b0 >= cols) return 0;
  let p = 0;
  for (let i = b0; i < cols; i++) p += nibble(w, i) * <i32>load<i8>(q + <usize>i);
  return <f32>p * (scaleAt(sc, nb, per) * load<f32>(ds + (<usize>nb << 2)));
}
