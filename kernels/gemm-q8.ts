// Prefill with q8 activations. The host first quantizes the T tokens (quantizeTokens, split over
// the pool: each token once, not once per chunk of rows), then every chunk of rows runs here:
// int8/int4 rows are widened to i16 codes four at a time, and a 4-row × 2-token tile of
// i32x4.dot_i16x8_s shares every loaded weight vector between two tokens; i32 sums are scaled to
// f32 once per block of 32. The relaxed build's int4 takes gemmQ4I8 (i8 codes, below).
import { INT4, LUT, fmtOf, colsOf, rowsOf, rowPtr, rowScales, scalesPerRowOf, q8PerScale, lutScalesOf, bitsOf } from './matrix';
import { widenLut, lutSplit } from './lut-q8';
import { quantizeQ8, q8Blocks, q8RowBytes, gather4, scaleAt, NATURAL, QUAD, SPLIT } from './q8';
import { nibble } from './decode';
import { quantizeQ8I8, unpackNibbles, interleave4, tile4x2G, restQ4, tailQ4 } from './q4-relaxed';

/** Bytes of one quantized token: codes (q8RowBytes), then block scales (f32), then corrections (i32x4 per block). */
export function q8TokenBytes(cols: i32): usize {
  return q8RowBytes(cols) + (<usize>q8Blocks(cols) * 20);
}

/** Whether the relaxed build's i8 activation codes serve d: int4 always, lut4 for one token (gemvLut4I8). */
@inline function i8Layout(d: usize, T: i32): bool {
  return ASC_FEATURE_RELAXED_SIMD && (fmtOf(d) == INT4 || (T == 1 && fmtOf(d) == LUT && bitsOf(d) == 4));
}

/** Quantize tokens t0..t1 of x (T × cols f32) for weight d into q (q8TokenBytes apart). */
export function quantizeTokens(d: usize, x: usize, t0: i32, t1: i32, q: usize, T: i32): void {
  const cols = colsOf(d), ts = q8TokenBytes(cols), codes = q8RowBytes(cols);
  const corr = codes + (<usize>q8Blocks(cols) << 2);
  for (let t = t0; t < t1; t++) {
    const xt = x + ((<usize>t * <usize>cols) << 2), qt = q + <usize>t * ts;
    if (i8Layout(d, T)) {
      quantizeQ8I8(xt, cols, qt, qt + codes, qt + corr);
      if (T > 1) interleave4(qt, cols >> 7); // the int4 GEMM's grouped blocks
    }
    else quantizeQ8(xt, cols, qt, qt + codes, fmtOf(d) == INT4 ? QUAD : lutSplit(d) ? SPLIT : NATURAL, qt + corr);
  }
}

/** out[t, r] for rows r0..r1 from tokens quantized by quantizeTokens into q. */
export function gemmQ8(d: usize, q: usize, T: i32, out: usize, r0: i32, r1: i32, scratch: usize): void {
  if (i8Layout(d, T)) {
    gemmQ4I8(d, q, T, out, r0, r1, scratch);
    return;
  }
  const cols = colsOf(d);
  const rows = rowsOf(d);
  const int4 = fmtOf(d) == INT4, lut = fmtOf(d) == LUT;
  // Token t: codes at q + t·qs, scales at ds + t·qs.
  const qs = q8TokenBytes(cols);
  const ds = q + q8RowBytes(cols), dss = qs;
  const decStride = q8RowBytes(cols);
  const dec = scratch; // 4 rows widened to i16 codes, then their transposed scales
  const per = q8PerScale(d);
  // A LUT's scales: one per row (its table's), beside the descriptor's tables.
  const scs: usize = lut ? 4 : <usize>scalesPerRowOf(d) << 2;
  const os = <usize>rows << 2;
  for (let r = r0; r < r1; r += 4) {
    const nr = min(4, r1 - r);
    // Rows widened once to i16 (reused by every token): the tile's inner loop is plain loads.
    for (let j = 0; j < nr; j++) {
      if (int4) unpackInt4(rowPtr(d, r + j), cols, dec + <usize>j * decStride);
      else if (lut) widenLut(d, r + j, dec + <usize>j * decStride);
      else widenInt8(rowPtr(d, r + j), cols, dec + <usize>j * decStride);
    }
    const w = dec, ws = decStride;
    const sc = lut ? lutScalesOf(d) + (<usize>r << 2) : rowScales(d, r);
    const o = out + (<usize>r << 2);
    let t = 0;
    if (nr == 4) {
      // The 4 rows' scales per block of 32, transposed: st[k] = [s(r, k), s(r+1, k), s(r+2, k), s(r+3, k)].
      const st = dec + 4 * decStride;
      transposeScales(sc, scs, per, cols >> 5, st);
      for (; t + 2 <= T; t += 2) {
        tile4x2(w, ws, q + <usize>t * qs, qs, ds + <usize>t * dss, dss, st, sc, scs, per, cols, o + <usize>t * os, os);
      }
    }
    for (; t < T; t++) {
      for (let j = 0; j < nr; j++) {
        store<f32>(o + <usize>t * os + (<usize>j << 2), dotQ16(w + <usize>j * ws, q + <usize>t * qs, ds + <usize>t * dss, sc + <usize>j * scs, per, cols));
      }
    }
  }
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

/** int8 row → i16 codes (zero-padded to whole blocks). */
function widenInt8(src: usize, cols: i32, dst: usize): void {
  let i = 0;
  for (; i + 8 <= cols; i += 8) v128.store(dst + (<usize>i << 1), v128.load8x8_s(src + <usize>i));
  for (; i < ((cols + 31) & ~31); i++) store<i16>(dst + (<usize>i << 1), i < cols ? <i16>load<i8>(src + <usize>i) : 0);
}

/** One row of i16 codes against one token (the GEMM's edge rows and tokens). */
function dotQ16(w: usize, q: usize, ds: usize, sc: usize, per: i32, cols: i32): f32 {
  let acc: f32 = 0;
  let sp = sc, left = per;
  for (let b0 = 0; b0 < cols; b0 += 32) {
    let p = i32x4.splat(0);
    for (let j = 0; j < 64; j += 16) p = i32x4.add(p, i32x4.dot_i16x8_s(v128.load(w + (<usize>b0 << 1) + j), v128.load(q + (<usize>b0 << 1) + j)));
    const P = i32x4.extract_lane(p, 0) + i32x4.extract_lane(p, 1) + i32x4.extract_lane(p, 2) + i32x4.extract_lane(p, 3);
    acc += load<f32>(sp) * load<f32>(ds + (<usize>(b0 >> 5) << 2)) * <f32>P;
    if (--left == 0) { left = per; sp += 4; }
  }
  return acc;
}

/**
 * 4 rows (ws bytes apart) × 2 tokens (codes qs, scales dss bytes apart) → out, rows os apart.
 * Per block, the four rows' i32 sums of a token are gathered into one vector and scaled by
 * st[k] (the rows' scales) × the token's scale: two f32 accumulators, one per token.
 */
function tile4x2(w: usize, ws: usize, q0: usize, qs: usize, d0: usize, dss: usize, st: usize, sc: usize, scs: usize, per: i32, cols: i32, out: usize, os: usize): void {
  const w1 = w + ws, w2 = w1 + ws, w3 = w2 + ws, q1 = q0 + qs, d1 = d0 + dss;
  const full = cols & ~31;
  let acc0 = f32x4.splat(0), acc1 = f32x4.splat(0);
  let b0 = 0;
  for (; b0 < full; b0 += 32) {
    const wo = <usize>b0 << 1, qo = <usize>b0 << 1;
    // The block's 4 steps of 8, written out (the compiler keeps an inner loop as a loop).
    let x0 = v128.load(q0 + qo), x1 = v128.load(q1 + qo);
    let v0 = v128.load(w + wo), v1 = v128.load(w1 + wo);
    let p00 = i32x4.dot_i16x8_s(v0, x0), p01 = i32x4.dot_i16x8_s(v0, x1);
    let p10 = i32x4.dot_i16x8_s(v1, x0), p11 = i32x4.dot_i16x8_s(v1, x1);
    let v2 = v128.load(w2 + wo), v3 = v128.load(w3 + wo);
    let p20 = i32x4.dot_i16x8_s(v2, x0), p21 = i32x4.dot_i16x8_s(v2, x1);
    let p30 = i32x4.dot_i16x8_s(v3, x0), p31 = i32x4.dot_i16x8_s(v3, x1);
    for (let j: usize = 8; j < 32; j += 8) {
      x0 = v128.load(q0 + qo + (j << 1)); x1 = v128.load(q1 + qo + (j << 1));
      v0 = v128.load(w + wo + (j << 1)); v1 = v128.load(w1 + wo + (j << 1));
      p00 = i32x4.add(p00, i32x4.dot_i16x8_s(v0, x0)); p01 = i32x4.add(p01, i32x4.dot_i16x8_s(v0, x1));
      p10 = i32x4.add(p10, i32x4.dot_i16x8_s(v1, x0)); p11 = i32x4.add(p11, i32x4.dot_i16x8_s(v1, x1));
      v2 = v128.load(w2 + wo + (j << 1)); v3 = v128.load(w3 + wo + (j << 1));
      p20 = i32x4.add(p20, i32x4.dot_i16x8_s(v2, x0)); p21 = i32x4.add(p21, i32x4.dot_i16x8_s(v2, x1));
      p30 = i32x4.add(p30, i32x4.dot_i16x8_s(v3, x0)); p31 = i32x4.add(p31, i32x4.dot_i16x8_s(v3, x1));
    }
    const k = <usize>(b0 >> 5) << 2;
    const s4 = v128.load(st + (k << 2));
    acc0 = f32x4.add(acc0, f32x4.mul(f32x4.convert_i32x4_s(gather4(p00, p10, p20, p30)), f32x4.mul(s4, f32x4.splat(load<f32>(d0 + k)))));
    acc1 = f32x4.add(acc1, f32x4.mul(f32x4.convert_i32x4_s(gather4(p01, p11, p21, p31)), f32x4.mul(s4, f32x4.splat(load<f32>(d1 + k)))));
  }
  if (b0 < cols) {
    // Partial last block (per-channel / per-tensor scales only): scalar.
    const k = <usize>(b0 >> 5) << 2;
    const e0 = load<f32>(d0 + k), e1 = load<f32>(d1 + k);
    const s0 = load<f32>(sc), s1 = load<f32>(sc + scs), s2 = load<f32>(sc + 2 * scs), s3 = load<f32>(sc + 3 * scs);
    acc0 = f32x4.add(acc0, f32x4(tailDot(w, q0, b0, cols) * (s0 * e0), tailDot(w1, q0, b0, cols) * (s1 * e0), tailDot(w2, q0, b0, cols) * (s2 * e0), tailDot(w3, q0, b0, cols) * (s3 * e0)));
    acc1 = f32x4.add(acc1, f32x4(tailDot(w, q1, b0, cols) * (s0 * e1), tailDot(w1, q1, b0, cols) * (s1 * e1), tailDot(w2, q1, b0, cols) * (s2 * e1), tailDot(w3, q1, b0, cols) * (s3 * e1)));
  }
  v128.store(out, acc0);
  v128.store(out + os, acc1);
}

function tailDot(w: usize, q: usize, b0: i32, cols: i32): f32 {
  let p = 0;
  for (let i = b0; i < cols; i++) p += <i32>load<i16>(w + (<usize>i << 1)) * <i32>load<i16>(q + (<usize>i << 1));
  return <f32>p;
}

/** st[k] = the scales of 4 rows (scs bytes apart, from sc) for block k: one vector per block. */
function transposeScales(sc: usize, scs: usize, per: i32, nb: i32, st: usize): void {
  for (let k = 0, left = per, si: usize = 0; k < nb; k++) {
    for (let j = 0; j < 4; j++) store<f32>(st + (<usize>(k * 4 + j) << 2), load<f32>(sc + <usize>j * scs + si));
    if (--left == 0) { left = per; si += 4; }
  }
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
      for (let k = 0; k < nbAll; k++) store<f32>(sj + (<usize>k << 2), scaleAt(sc, k, per));
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
