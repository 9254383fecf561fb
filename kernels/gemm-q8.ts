// Prefill with q8 activations. The host first quantizes the T tokens (quantizeTokens, split over
// the pool: each token once, not once per chunk of rows), then every chunk of rows runs here:
// int8/int4/LUT rows are widened to i16 codes four at a time, their full blocks grouped by four as
// the tokens' are (interleave16), and a 4-row × 2-token tile of i32x4.dot_i16x8_s shares every
// loaded weight vector between two tokens; i32 sums are scaled to f32 once per group of four
// blocks. The relaxed build's int4 takes gemmQ4I8 (i8 codes, below).
import { INT4, LUT, fmtOf, colsOf, rowsOf, rowPtr, rowScales, q8PerScale, lutScalesOf, bitsOf } from './matrix';
import { widenLut, lutSplit } from './lut-q8';
import { quantizeQ8, q8Blocks, q8RowBytes, scaleAt, isum, NATURAL, QUAD, SPLIT } from './q8';
import { hsum4, madd } from './dot';
import { nibble } from './decode';
import { quantizeQ8I8, unpackNibbles, interleave4, groupCorrections, tile4x2G, restQ4, tailQ4, transpose4 } from './q4-relaxed';

/** Bytes of one quantized token: codes (q8RowBytes), then block scales (f32), then corrections (i32x4 per block). */
export function q8TokenBytes(cols: i32): usize {
  return q8RowBytes(cols) + (<usize>q8Blocks(cols) * 20);
}

/**
 * Up to this many tokens a q8 matmul runs one GEMV per token over blocks of rows (kernels/index.ts)
 * and the tokens keep the GEMV's layout: widening a tile's rows costs more than the dot products
 * of a few tokens (one thread, 2048 × 1152 int8: 2 and 3 tokens 0.27 / 0.40 ms as GEMVs, 0.37 /
 * 0.53 in the GEMM; from 4 tokens the GEMM wins, int4 by 1.3×).
 */
const GEMV_TOKENS = 3;

/**
 * Whether T tokens of d run as GEMVs: up to GEMV_TOKENS for int8, int4 and the relaxed build's
 * lut4 (its GEMV is int4's); the other LUT GEMVs cost more than the GEMM's table lookups once per row.
 */
@inline export function gemvTokens(d: usize, T: i32): bool {
  return T == 1 || (T <= GEMV_TOKENS && (fmtOf(d) != LUT || (ASC_FEATURE_RELAXED_SIMD && bitsOf(d) == 4)));
}

/** Whether the relaxed build's i8 activation codes serve d: int4 always, lut4 when GEMVs run (gemvLut4I8). */
@inline function i8Layout(d: usize, T: i32): bool {
  return ASC_FEATURE_RELAXED_SIMD && (fmtOf(d) == INT4 || (fmtOf(d) == LUT && bitsOf(d) == 4 && gemvTokens(d, T)));
}

/**
 * Which layout quantizeTokens writes for weight d and T tokens, as a small code: two weights with
 * the same code and width read the same quantized input (the host quantizes a shared input once).
 */
export function q8Layout(d: usize, T: i32): i32 {
  const gemv: i32 = gemvTokens(d, T) ? 1 : 0;
  if (i8Layout(d, T)) return 2 | gemv;
  return (fmtOf(d) == INT4 ? 4 : lutSplit(d) ? 8 : 16) | gemv;
}

/** Quantize tokens t0..t1 of x (T × cols f32) for weight d into q (q8TokenBytes apart). */
export function quantizeTokens(d: usize, x: usize, t0: i32, t1: i32, q: usize, T: i32): void {
  const cols = colsOf(d), ts = q8TokenBytes(cols), codes = q8RowBytes(cols);
  const corr = codes + (<usize>q8Blocks(cols) << 2);
  for (let t = t0; t < t1; t++) {
    const xt = x + ((<usize>t * <usize>cols) << 2), qt = q + <usize>t * ts;
    if (i8Layout(d, T)) {
      quantizeQ8I8(xt, cols, qt, qt + codes, qt + corr);
      if (!gemvTokens(d, T)) {
        interleave4(qt, cols >> 7); // the int4 GEMM's grouped blocks
        groupCorrections(qt, qt + corr, cols >> 7);
      }
    } else {
      quantizeQ8(xt, cols, qt, qt + codes, fmtOf(d) == INT4 ? QUAD : lutSplit(d) ? SPLIT : NATURAL, qt + corr);
      if (!gemvTokens(d, T)) interleave16(qt, cols >> 7); // the i16 GEMM's grouped blocks
    }
  }
}

/**
 * A row's weight scale for each of its n blocks, from its scales at sc (per: blocks per scale, 0:
 * one for the row) into dst: copied when there is one per block, without a division per block.
 */
@inline function expandScales(sc: usize, per: i32, n: i32, dst: usize): void {
  if (per == 1) memory.copy(dst, sc, <usize>n << 2);
  else if (per == 0) {
    const s = load<f32>(sc);
    for (let k = 0; k < n; k++) store<f32>(dst + (<usize>k << 2), s);
  } else for (let k = 0; k < n; k++) store<f32>(dst + (<usize>k << 2), scaleAt(sc, k, per));
}

/** out[t, r] for rows r0..r1 from tokens quantized by quantizeTokens into q. */
export function gemmQ8(d: usize, q: usize, T: i32, out: usize, r0: i32, r1: i32, scratch: usize): void {
  if (i8Layout(d, T)) {
    gemmQ4I8(d, q, T, out, r0, r1, scratch);
    return;
  }
  const cols = colsOf(d), rows = rowsOf(d);
  const int4 = fmtOf(d) == INT4, lut = fmtOf(d) == LUT;
  const qs = q8TokenBytes(cols), ds = q + q8RowBytes(cols);
  const nbAll = q8Blocks(cols), groups = cols >> 7;
  const ws = q8RowBytes(cols); // one row widened to i16 codes
  const sxs = <usize>nbAll << 2; // one row's scales per block
  const dec = scratch, sx = dec + 4 * ws, side = sx + 4 * sxs;
  const per = q8PerScale(d);
  const os = <usize>rows << 2;
  for (let r = r0; r < r1; r += 4) {
    const nr = min(4, r1 - r);
    // Rows widened once to i16 codes, grouped as the tokens are, and their scales expanded to one
    // per block: every token pair's tile is plain loads. Edge rows repeat the last row.
    for (let j = 0; j < 4; j++) {
      const rr = r + min(j, nr - 1), wj = dec + <usize>j * ws, sj = sx + <usize>j * sxs;
      if (int4) unpackInt4(rowPtr(d, rr), cols, wj);
      else if (lut) widenLut(d, rr, wj);
      if (int4 || lut) interleave16(wj, groups);
      else widenInt8Grouped(rowPtr(d, rr), cols, wj, groups);
      // A LUT's scales: one per row (its table's), beside the descriptor's tables.
      const sc = lut ? lutScalesOf(d) + (<usize>rr << 2) : rowScales(d, rr);
      expandScales(sc, per, nbAll, sj);
    }
    for (let t = 0; t < T; t += 2) {
      // An odd last token repeats itself; edge rows and that token go through the side buffer.
      const nt = min(2, T - t), ts: usize = nt == 2 ? qs : 0;
      const direct = nr == 4 && nt == 2;
      const o = direct ? out + <usize>t * os + (<usize>r << 2) : side, oos: usize = direct ? os : 16;
      const qt = q + <usize>t * qs, dt = ds + <usize>t * qs;
      tile4x2G16(dec, ws, qt, dt, ts, sx, sxs, groups, o, oos);
      if (groups << 2 < nbAll) {
        for (let j = 0; j < 4; j++) {
          for (let u = 0; u < 2; u++) {
            const a = o + <usize>u * oos + (<usize>j << 2), tu = <usize>min(u, nt - 1) * qs;
            store<f32>(a, load<f32>(a) + restQ16(dec + <usize>j * ws, qt + tu, dt + tu, sx + <usize>j * sxs, groups << 2, nbAll));
          }
        }
      }
      if (!direct) {
        for (let u = 0; u < nt; u++) {
          for (let j = 0; j < nr; j++) store<f32>(out + <usize>(t + u) * os + (<usize>(r + j) << 2), load<f32>(side + <usize>u * 16 + (<usize>j << 2)));
        }
      }
    }
  }
}

/**
 * The i16 GEMM's grouped layout, in place over the first 4·groups blocks of a row of i16 codes
 * (weights widened, or a token's codes). Per group of four blocks (64 bytes each), the four
 * vectors at the same offset in each block are transposed as 4 × 4 32-bit lanes: afterwards every
 * vector holds two codes of each block, block j's in lane j, so a dot product of two such rows
 * leaves block j's sum in i32 lane j and a group's sixteen dot products add up in one register
 * that holds the four blocks' totals. Any fixed order of codes within a block (natural, quad,
 * split) is kept; weights and tokens go through the same permutation.
 */
export function interleave16(p: usize, groups: i32): void {
  for (let g = 0; g < groups; g++, p += 256) {
    for (let m: usize = 0; m < 64; m += 16) {
      transpose4(p + m, v128.load(p + m), v128.load(p + m, 64), v128.load(p + m, 128), v128.load(p + m, 192), 64);
    }
  }
}

/**
 * The i16 GEMM tile over the grouped blocks: 4 rows of i16 codes (w, ws bytes apart) × 2 tokens
 * (codes from q0, block scales from d0; the second token ts bytes after the first, ts = 0 repeats
 * it); sx holds each row's scale per block (sxs bytes apart). Per group, row and token sixteen
 * i32x4.dot_i16x8_s add up to the four blocks' totals, scaled by their row × token scales into
 * one f32x4, summed across at the end. Sums for rows r..r+3: out (token 0) and out + os (token 1).
 */
function tile4x2G16(w: usize, ws: usize, q0: usize, d0: usize, ts: usize, sx: usize, sxs: usize, groups: i32, out: usize, os: usize): void {
  const w1 = w + ws, w2 = w1 + ws, w3 = w2 + ws, q1 = q0 + ts;
  let f00 = f32x4.splat(0), f01 = f32x4.splat(0), f10 = f32x4.splat(0), f11 = f32x4.splat(0);
  let f20 = f32x4.splat(0), f21 = f32x4.splat(0), f30 = f32x4.splat(0), f31 = f32x4.splat(0);
  for (let g = 0; g < groups; g++) {
    const go = <usize>g << 8;
    let s00 = i32x4.splat(0), s01 = i32x4.splat(0), s10 = i32x4.splat(0), s11 = i32x4.splat(0);
    let s20 = i32x4.splat(0), s21 = i32x4.splat(0), s30 = i32x4.splat(0), s31 = i32x4.splat(0);
    for (let v: usize = go; v < go + 256; v += 16) {
      const a0 = v128.load(q0 + v), a1 = v128.load(q1 + v);
      let b = v128.load(w + v);
      s00 = i32x4.add(s00, i32x4.dot_i16x8_s(a0, b)); s01 = i32x4.add(s01, i32x4.dot_i16x8_s(a1, b));
      b = v128.load(w1 + v);
      s10 = i32x4.add(s10, i32x4.dot_i16x8_s(a0, b)); s11 = i32x4.add(s11, i32x4.dot_i16x8_s(a1, b));
      b = v128.load(w2 + v);
      s20 = i32x4.add(s20, i32x4.dot_i16x8_s(a0, b)); s21 = i32x4.add(s21, i32x4.dot_i16x8_s(a1, b));
      b = v128.load(w3 + v);
      s30 = i32x4.add(s30, i32x4.dot_i16x8_s(a0, b)); s31 = i32x4.add(s31, i32x4.dot_i16x8_s(a1, b));
    }
    const ko = <usize>g << 4;
    const e0 = v128.load(d0 + ko), e1 = v128.load(d0 + ts + ko);
    let b = v128.load(sx + ko);
    f00 = madd(f32x4.convert_i32x4_s(s00), f32x4.mul(b, e0), f00); f01 = madd(f32x4.convert_i32x4_s(s01), f32x4.mul(b, e1), f01);
    b = v128.load(sx + sxs + ko);
    f10 = madd(f32x4.convert_i32x4_s(s10), f32x4.mul(b, e0), f10); f11 = madd(f32x4.convert_i32x4_s(s11), f32x4.mul(b, e1), f11);
    b = v128.load(sx + 2 * sxs + ko);
    f20 = madd(f32x4.convert_i32x4_s(s20), f32x4.mul(b, e0), f20); f21 = madd(f32x4.convert_i32x4_s(s21), f32x4.mul(b, e1), f21);
    b = v128.load(sx + 3 * sxs + ko);
    f30 = madd(f32x4.convert_i32x4_s(s30), f32x4.mul(b, e0), f30); f31 = madd(f32x4.convert_i32x4_s(s31), f32x4.mul(b, e1), f31);
  }
  v128.store(out, hsum4(f00, f10, f20, f30));
  v128.store(out + os, hsum4(f01, f11, f21, f31));
}

/**
 * One row of i16 codes against one token over blocks k0..k1 (those outside the groups, a partial
 * last one zero-padded on both sides), scales per block from sxr: their scaled sum.
 */
function restQ16(wr: usize, qt: usize, dt: usize, sxr: usize, k0: i32, k1: i32): f32 {
  let acc: f32 = 0;
  for (let k = k0; k < k1; k++) {
    const o = <usize>k << 6;
    let p = i32x4.dot_i16x8_s(v128.load(wr + o), v128.load(qt + o));
    p = i32x4.add(p, i32x4.dot_i16x8_s(v128.load(wr + o, 16), v128.load(qt + o, 16)));
    p = i32x4.add(p, i32x4.dot_i16x8_s(v128.load(wr + o, 32), v128.load(qt + o, 32)));
    p = i32x4.add(p, i32x4.dot_i16x8_s(v128.load(wr + o, 48), v128.load(qt + o, 48)));
    acc += <f32>isum(p) * (load<f32>(sxr + (<usize>k << 2)) * load<f32>(dt + (<usize>k << 2)));
  }
  return acc;
}

/** int4 row → i16 codes (−8..7) in the quad layout of kernels/q8.ts (tail block natural, zero-padded). */
function unpackInt4(src: usize, cols: i32, dst: usize): void {
  const full = cols & ~31;
  const m = i16x8.splat(15), eight = i16x8.splat(8);
  let b0 = 0;
  for (; b0 < full; b0 += 32) {
    const b = v128.load(src + (<usize>b0 >> 1));
    const o = dst + (<usize>b0 << 1);
    v128.store(o, i16x8.sub(v128.and(b, m), eight));
    v128.store(o, i16x8.sub(v128.and(i16x8.shr_u(b, 4), m), eight), 16);
    v128.store(o, i16x8.sub(v128.and(i16x8.shr_u(b, 8), m), eight), 32);
    v128.store(o, i16x8.sub(i16x8.shr_u(b, 12), eight), 48);
  }
  for (let i = b0; i < ((cols + 31) & ~31); i++) store<i16>(dst + (<usize>i << 1), i < cols ? <i16>nibble(src, i) : 0);
}

/**
 * int8 row → i16 codes (zero-padded to whole blocks), its first `groups` groups of four blocks
 * already in interleave16's order: each 8-byte piece widened as it is loaded and shuffled straight
 * into place (one pass over the row instead of a widening pass and an interleaving pass).
 */
function widenInt8Grouped(src: usize, cols: i32, dst: usize, groups: i32): void {
  for (let g = 0; g < groups; g++) {
    const s = src + (<usize>g << 7), p = dst + (<usize>g << 8);
    for (let m: usize = 0; m < 64; m += 16) {
      const w = s + (m >> 1);
      transpose4(p + m, v128.load8x8_s(w), v128.load8x8_s(w + 32), v128.load8x8_s(w + 64), v128.load8x8_s(w + 96), 64);
    }
  }
  let i = groups << 7;
  for (; i + 8 <= cols; i += 8) v128.store(dst + (<usize>i << 1), v128.load8x8_s(src + <usize>i));
  for (; i < ((cols + 31) & ~31); i++) store<i16>(dst + (<usize>i << 1), i < cols ? <i16>load<i8>(src + <usize>i) : 0);
}

/**
 * The relaxed build's int4 GEMM (kernels/q4-relaxed.ts): tokens quantized to i8 codes with their
 * full blocks grouped by four (interleave4), 4 rows unpacked to nibble bytes and grouped the same
 * way once, their scales expanded to one per block, then 4-row × 2-token tiles. Blocks outside
 * the groups (fewer than four full ones, a partial last one) are added per row and token. Edge
 * rows repeat the last row and an odd last token repeats itself, into a side buffer.
 */
function gemmQ4I8(d: usize, q: usize, T: i32, out: usize, r0: i32, r1: i32, scratch: usize): void {
  const cols = colsOf(d), rows = rowsOf(d);
  const qs = q8TokenBytes(cols);
  const ds = q + q8RowBytes(cols), corr = ds + (<usize>q8Blocks(cols) << 2);
  const nbAll = q8Blocks(cols), full = cols >> 5, groups = full >> 2;
  const us = <usize>nbAll << 5; // one unpacked row
  const sxs = <usize>nbAll << 2; // one row's scales per block
  const dec = scratch, sx = dec + 4 * us, side = sx + 4 * sxs;
  const per = q8PerScale(d);
  const os = <usize>rows << 2;
  for (let r = r0; r < r1; r += 4) {
    const nr = min(4, r1 - r);
    for (let j = 0; j < 4; j++) {
      const rr = r + min(j, nr - 1), uj = dec + <usize>j * us, sj = sx + <usize>j * sxs, sc = rowScales(d, rr);
      unpackNibbles(rowPtr(d, rr), cols, uj);
      interleave4(uj, groups);
      expandScales(sc, per, nbAll, sj);
    }
    for (let t = 0; t < T; t += 2) {
      const nt = min(2, T - t), ts: usize = nt == 2 ? qs : 0;
      const direct = nr == 4 && nt == 2;
      const o = direct ? out + <usize>t * os + (<usize>r << 2) : side, oos: usize = direct ? os : 16;
      const qt = q + <usize>t * qs, dt = ds + <usize>t * qs, ct = corr + <usize>t * qs;
      tile4x2G(dec, us, qt, dt, ct, ts, sx, sxs, groups, o, oos);
      if (groups << 2 < nbAll) {
        for (let j = 0; j < 4; j++) {
          const rr = r + min(j, nr - 1);
          for (let u = 0; u < 2; u++) {
            const a = o + <usize>u * oos + (<usize>j << 2), tu = <usize>min(u, nt - 1) * qs;
            let v = restQ4(dec + <usize>j * us, qt + tu, dt + tu, ct + tu, sx + <usize>j * sxs, groups << 2, full);
            v += tailQ4(rowPtr(d, rr), qt + tu, dt + tu, rowScales(d, rr), per, cols);
            store<f32>(a, load<f32>(a) + v);
          }
        }
      }
      if (!direct) {
        for (let u = 0; u < nt; u++) {
          for (let j = 0; j < nr; j++) store<f32>(out + <usize>(t + u) * os + (<usize>(r + j) << 2), load<f32>(side + <usize>u * 16 + (<usize>j << 2)));
        }
      }
    }
  }
}
