// LUT weights (lut1..lut7) against q8 activations: each row's table is rounded to integers (±63 up
// to 4 bits, ±127 above: lutQ8Max) with one scale per table (the host does it at prepare(); lut8
// runs as int8), so a weight is a code looked up in 2^b bytes. Per 16 weights: the codes as
// bytes, looked up with swizzles (one per 16 table entries), widened to i16 and multiplied with the
// activation codes by i32x4.dot_i16x8_s.
// Activations are i16 codes (kernels/q8.ts). lut1..3 codes are a bitstream, unpacked by constant
// shuffles and multiplies, against activations in the natural layout. lut4..7 use the split one
// (even elements, then odd): lut4's low and high nibbles of a block's 16 bytes, and lut5..7's planar
// layout (lutToPlanar below, run at prepare(): that nibble plane plus one bit plane per code bit
// above 4, whose bits become the lane masks that pick a 16-entry chunk of the table). A partial
// last block is a bitstream in natural order, zero-padded. The relaxed build's lut4 GEMV takes i8
// activations instead (gemvLut4I8), as its int4 does.
import { colsOf, rowPtr, bitsOf, rowTableI8, lutScalesOf, lutPlanarOf, fmtOf, LUT } from './matrix';
import { q8RowBytes, q8Blocks } from './q8';
import { hsum } from './dot';

/** 16 codes of b bits (b = 1, 2, 3, a constant) from the bitstream at p, as bytes in order: code
 * j's two bytes shuffled into i16 lane j (codes 0..7, then 8..15), multiplied to put the code at
 * the top of its lane, shifted down by 16 − b. */
@inline function unpack16(p: usize, bits: i32): v128 {
  const v = v128.load(p);
  let lo: v128, hi: v128;
  if (bits == 1) {
    lo = i16x8.mul(v128.shuffle<u8>(v, v, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1), i16x8(-32768, 16384, 8192, 4096, 2048, 1024, 512, 256));
    hi = i16x8.mul(v128.shuffle<u8>(v, v, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2), i16x8(-32768, 16384, 8192, 4096, 2048, 1024, 512, 256));
  } else if (bits == 2) {
    lo = i16x8.mul(v128.shuffle<u8>(v, v, 0, 1, 0, 1, 0, 1, 0, 1, 1, 2, 1, 2, 1, 2, 1, 2), i16x8(16384, 4096, 1024, 256, 16384, 4096, 1024, 256));
    hi = i16x8.mul(v128.shuffle<u8>(v, v, 2, 3, 2, 3, 2, 3, 2, 3, 3, 4, 3, 4, 3, 4, 3, 4), i16x8(16384, 4096, 1024, 256, 16384, 4096, 1024, 256));
  } else {
    lo = i16x8.mul(v128.shuffle<u8>(v, v, 0, 1, 0, 1, 0, 1, 1, 2, 1, 2, 1, 2, 2, 3, 2, 3), i16x8(8192, 1024, 128, 4096, 512, 64, 2048, 256));
    hi = i16x8.mul(v128.shuffle<u8>(v, v, 3, 4, 3, 4, 3, 4, 4, 5, 4, 5, 4, 5, 5, 6, 5, 6), i16x8(8192, 1024, 128, 4096, 512, 64, 2048, 256));
  }
  return i8x16.narrow_i16x8_u(i16x8.shr_u(lo, 16 - bits), i16x8.shr_u(hi, 16 - bits));
}

/** Bit plane h of a planar block (its planes start at p) spread over the lanes: byte k of the
 * plane in lanes k, k + 4, k + 8, k + 12. */
@inline function planeBytes(p: usize, h: i32): v128 {
  const v = v128.load(p);
  return h == 0 ? v128.shuffle<u8>(v, v, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3)
    : h == 1 ? v128.shuffle<u8>(v, v, 4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7)
    : v128.shuffle<u8>(v, v, 8, 9, 10, 11, 8, 9, 10, 11, 8, 9, 10, 11, 8, 9, 10, 11);
}

/** The lane mask (all ones where the code's bit is set) of the even elements (odd = false) or the
 * odd ones, from a plane spread by planeBytes: lane j's bit is bit j / 4 (+ 4 for odd) of its byte. */
@inline function maskOf(b: v128, odd: bool): v128 {
  const bit = odd ? i8x16(16, 16, 16, 16, 32, 32, 32, 32, 64, 64, 64, 64, -128, -128, -128, -128) : i8x16(1, 1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 4, 8, 8, 8, 8);
  return i8x16.eq(v128.and(b, bit), bit);
}

/**
 * The int8 table values of 16 codes given as their low 4 bits lo and masks m4, m5, m6 of bits 4, 5,
 * 6 (all ones where set; unused above the table's size), from the table's 16-entry chunks c0..c7
 * (loaded once per row); chunks = table entries / 16, at least 1.
 */
@inline function lookup(c0: v128, c1: v128, c2: v128, c3: v128, c4: v128, c5: v128, c6: v128, c7: v128, lo: v128, m4: v128, m5: v128, m6: v128, chunks: i32): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) {
    // Indices below 16 and all-0/all-1 masks make relaxed_swizzle and relaxed_laneselect exact
    // (x64: one pshufb, where swizzle adds a saturating add; one pblendvb): every 16-entry chunk
    // looked up by the low 4 bits, then chosen by the masks.
    if (chunks == 1) return i8x16.relaxed_swizzle(c0, lo);
    let r = i8x16.relaxed_laneselect(i8x16.relaxed_swizzle(c1, lo), i8x16.relaxed_swizzle(c0, lo), m4);
    if (chunks > 2) r = i8x16.relaxed_laneselect(i8x16.relaxed_laneselect(i8x16.relaxed_swizzle(c3, lo), i8x16.relaxed_swizzle(c2, lo), m4), r, m5);
    if (chunks > 4) {
      const a = i8x16.relaxed_laneselect(i8x16.relaxed_swizzle(c5, lo), i8x16.relaxed_swizzle(c4, lo), m4);
      const b = i8x16.relaxed_laneselect(i8x16.relaxed_swizzle(c7, lo), i8x16.relaxed_swizzle(c6, lo), m4);
      r = i8x16.relaxed_laneselect(i8x16.relaxed_laneselect(b, a, m5), r, m6);
    }
    return r;
  }
  // Baseline: the whole code, each chunk looked up by it less the chunk's start (an index past 15
  // gives 0, so the chunks' results are ORed).
  let c = lo;
  if (chunks > 1) c = v128.or(c, v128.and(m4, i8x16.splat(16)));
  if (chunks > 2) c = v128.or(c, v128.and(m5, i8x16.splat(32)));
  if (chunks > 4) c = v128.or(c, v128.and(m6, i8x16.splat(64)));
  let r = i8x16.swizzle(c0, c);
  if (chunks > 1) r = v128.or(r, i8x16.swizzle(c1, i8x16.sub(c, i8x16.splat(16))));
  if (chunks > 2) {
    r = v128.or(r, i8x16.swizzle(c2, i8x16.sub(c, i8x16.splat(32))));
    r = v128.or(r, i8x16.swizzle(c3, i8x16.sub(c, i8x16.splat(48))));
  }
  if (chunks > 4) {
    r = v128.or(r, i8x16.swizzle(c4, i8x16.sub(c, i8x16.splat(64))));
    r = v128.or(r, i8x16.swizzle(c5, i8x16.sub(c, i8x16.splat(80))));
    r = v128.or(r, i8x16.swizzle(c6, i8x16.sub(c, i8x16.splat(96))));
    r = v128.or(r, i8x16.swizzle(c7, i8x16.sub(c, i8x16.splat(112))));
  }
  return r;
}

/** Chunk k of the int8 table at t (zero past the table's chunks, unused then). */
@inline function chunkOf(t: usize, k: i32, chunks: i32): v128 {
  return k < chunks ? v128.load(t + (<usize>k << 4)) : i8x16.splat(0);
}

/**
 * The table values of one full block of 32 codes at p (a constant bits), in two halves: lut1..3
 * bitstream, codes 0..15 (second = false) or 16..31; lut4 nibbles and lut5..7 planar, the even
 * elements (second = false) or the odd ones. c0..c7: the table's chunks (chunkOf), loaded once per
 * row by the caller (lut7's eight: −10–25% in the GEMV; the smaller tables gain nothing measurable).
 */
@inline function half(p: usize, c0: v128, c1: v128, c2: v128, c3: v128, c4: v128, c5: v128, c6: v128, c7: v128, bits: i32, chunks: i32, second: bool): v128 {
  const z = i8x16.splat(0);
  if (bits <= 3) return lookup(c0, z, z, z, z, z, z, z, unpack16(second ? p + <usize>(bits << 1) : p, bits), z, z, z, 1);
  const v = v128.load(p), m = i8x16.splat(15);
  const lo = second ? v128.and(i16x8.shr_u(v, 4), m) : v128.and(v, m);
  const m4 = bits > 4 ? maskOf(planeBytes(p + 16, 0), second) : z;
  const m5 = bits > 5 ? maskOf(planeBytes(p + 16, 1), second) : z;
  const m6 = bits > 6 ? maskOf(planeBytes(p + 16, 2), second) : z;
  return lookup(c0, c1, c2, c3, c4, c5, c6, c7, lo, m4, m5, m6, chunks);
}

/** Whether d's q8 activations are in the split layout (lut4..7 full blocks). */
export function lutSplit(d: usize): bool {
  return fmtOf(d) == LUT && (bitsOf(d) == 4 || lutPlanarOf(d) != 0);
}

/** i32x4 partial sums of 16 table values v (i8) times 16 activation codes at qp (i16). */
@inline function dot16(v: v128, qp: usize): v128 {
  return i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(v), v128.load(qp)), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(v), v128.load(qp, 16)));
}

/** Code i of a row of b-bit codes (LSB-first bitstream). */
@inline function codeAt(w: usize, i: i32, bits: i32): i32 {
  const bit = i * bits;
  return (<i32>load<u16>(w + (<usize>bit >> 3)) >> (bit & 7)) & ((1 << bits) - 1);
}

/**
 * Two rows (w0, w1; int8 tables t0, t1) against one token's codes q and block scales ds: the
 * sums Σ_blocks d_k · Σ table(code)·q, not yet times the rows' scales, to out0 and out1.
 */
@inline function rowPair(w0: usize, w1: usize, t0: usize, t1: usize, q: usize, ds: usize, cols: i32, bits: i32, chunks: i32, out0: usize, out1: usize): void {
  const full = cols & ~31;
  // The two tables' chunks, loaded once for the row.
  const a0 = chunkOf(t0, 0, chunks), a1 = chunkOf(t0, 1, chunks), a2 = chunkOf(t0, 2, chunks), a3 = chunkOf(t0, 3, chunks);
  const a4 = chunkOf(t0, 4, chunks), a5 = chunkOf(t0, 5, chunks), a6 = chunkOf(t0, 6, chunks), a7 = chunkOf(t0, 7, chunks);
  const b0 = chunkOf(t1, 0, chunks), b1 = chunkOf(t1, 1, chunks), b2 = chunkOf(t1, 2, chunks), b3 = chunkOf(t1, 3, chunks);
  const b4 = chunkOf(t1, 4, chunks), b5 = chunkOf(t1, 5, chunks), b6 = chunkOf(t1, 6, chunks), b7 = chunkOf(t1, 7, chunks);
  let acc0 = f32x4.splat(0), acc1 = f32x4.splat(0);
  let i0 = 0;
  for (; i0 < full; i0 += 32) {
    const qp = q + (<usize>i0 << 1);
    const o = <usize>((i0 >> 3) * bits), p0 = w0 + o, p1 = w1 + o;
    const p = i32x4.add(dot16(half(p0, a0, a1, a2, a3, a4, a5, a6, a7, bits, chunks, false), qp), dot16(half(p0, a0, a1, a2, a3, a4, a5, a6, a7, bits, chunks, true), qp + 32));
    const u = i32x4.add(dot16(half(p1, b0, b1, b2, b3, b4, b5, b6, b7, bits, chunks, false), qp), dot16(half(p1, b0, b1, b2, b3, b4, b5, b6, b7, bits, chunks, true), qp + 32));
    const e = v128.load32_splat(ds + (<usize>(i0 >> 5) << 2));
    acc0 = f32x4.add(acc0, f32x4.mul(f32x4.convert_i32x4_s(p), e));
    acc1 = f32x4.add(acc1, f32x4.mul(f32x4.convert_i32x4_s(u), e));
  }
  let s0 = hsum(acc0), s1 = hsum(acc1);
  if (i0 < cols) {
    let p = 0, u = 0;
    for (let i = i0; i < cols; i++) {
      const c = <i32>load<i16>(q + (<usize>i << 1));
      p += <i32>load<i8>(t0 + <usize>codeAt(w0, i, bits)) * c;
      u += <i32>load<i8>(t1 + <usize>codeAt(w1, i, bits)) * c;
    }
    const e = load<f32>(ds + (<usize>(i0 >> 5) << 2));
    s0 += e * <f32>p;
    s1 += e * <f32>u;
  }
  store<f32>(out0, s0);
  store<f32>(out1, s1);
}

/** Rows r0..r1 of one token: pairs of rows half the range apart (two sequential streams, as gemv's int path). */
@inline function lutRows(d: usize, q: usize, out: usize, r0: i32, r1: i32, bits: i32, chunks: i32): void {
  const cols = colsOf(d);
  const ds = q + q8RowBytes(cols);
  const sc = lutScalesOf(d);
  const h = (r1 - r0) >> 1;
  for (let r = r0; r < r0 + h; r++) {
    const a = out + (<usize>r << 2), b = out + (<usize>(r + h) << 2);
    rowPair(rowPtr(d, r), rowPtr(d, r + h), rowTableI8(d, r), rowTableI8(d, r + h), q, ds, cols, bits, chunks, a, b);
    store<f32>(a, load<f32>(a) * load<f32>(sc + (<usize>r << 2)));
    store<f32>(b, load<f32>(b) * load<f32>(sc + (<usize>(r + h) << 2)));
  }
  if (((r1 - r0) & 1) != 0) {
    const r = r1 - 1, a = out + (<usize>r << 2);
    rowPair(rowPtr(d, r), rowPtr(d, r), rowTableI8(d, r), rowTableI8(d, r), q, ds, cols, bits, chunks, a, a);
    store<f32>(a, load<f32>(a) * load<f32>(sc + (<usize>r << 2)));
  }
}

/** The GEMV (one token, quantized by quantizeTokens into q): out[r] for rows r0..r1. */
export function gemvLutQ8(d: usize, q: usize, out: usize, r0: i32, r1: i32): void {
  const bits = bitsOf(d);
  // One specialised loop per table size (the constant arguments fold the lookups' branches).
  if (bits == 4) lutRows(d, q, out, r0, r1, 4, 1);
  else if (bits == 1) lutRows(d, q, out, r0, r1, 1, 1);
  else if (bits == 2) lutRows(d, q, out, r0, r1, 2, 1);
  else if (bits == 3) lutRows(d, q, out, r0, r1, 3, 1);
  else if (bits == 5) lutRows(d, q, out, r0, r1, 5, 2);
  else if (bits == 6) lutRows(d, q, out, r0, r1, 6, 4);
  else lutRows(d, q, out, r0, r1, 7, 8);
}

/**
 * lut4 GEMV in the relaxed build, against i8 activation codes (quantizeQ8I8's layout: per block
 * the even elements' codes, then the odd ones', and corr = 8·Σ codes). The tables (rounded to ±63,
 * lutQ8Max) biased by 64 are the unsigned 7-bit operand of i16x8.relaxed_dot_i8x16_i7x16_s, as
 * int4's nibbles are (exact on every engine: a pair sums to at most 2·127·127 < 32767); each
 * block's 64·Σ codes is subtracted after. A pair's two dots would overflow i16 if added, so each
 * is widened first.
 */
export function gemvLut4I8(d: usize, q: usize, out: usize, r0: i32, r1: i32): void {
  // Constant condition: the baseline build compiles nothing here (no caller reaches it there).
  if (!ASC_FEATURE_RELAXED_SIMD) return unreachable();
  const cols = colsOf(d);
  const ds = q + q8RowBytes(cols), corr = ds + (<usize>q8Blocks(cols) << 2);
  const sc = lutScalesOf(d);
  const h = (r1 - r0) >> 1;
  for (let r = r0; r < r0 + h; r++) {
    const a = out + (<usize>r << 2), b = out + (<usize>(r + h) << 2);
    pairLut4I8(rowPtr(d, r), rowPtr(d, r + h), rowTableI8(d, r), rowTableI8(d, r + h), q, ds, corr, cols, a, b);
    store<f32>(a, load<f32>(a) * load<f32>(sc + (<usize>r << 2)));
    store<f32>(b, load<f32>(b) * load<f32>(sc + (<usize>(r + h) << 2)));
  }
  if (((r1 - r0) & 1) != 0) {
    const r = r1 - 1, a = out + (<usize>r << 2);
    pairLut4I8(rowPtr(d, r), rowPtr(d, r), rowTableI8(d, r), rowTableI8(d, r), q, ds, corr, cols, a, a);
    store<f32>(a, load<f32>(a) * load<f32>(sc + (<usize>r << 2)));
  }
}

/** i32x4 partial sums of one block's 32 biased table values (the nibbles v looked up in t) times codes e, o. */
@inline function blockLut4I8(t: v128, v: v128, e: v128, o: v128): v128 {
  const m = i8x16.splat(15);
  const lo = i8x16.relaxed_swizzle(t, v128.and(v, m)), hi = i8x16.relaxed_swizzle(t, v128.and(i16x8.shr_u(v, 4), m));
  return i32x4.add(i32x4.extadd_pairwise_i16x8_s(i16x8.relaxed_dot_i8x16_i7x16_s(e, lo)), i32x4.extadd_pairwise_i16x8_s(i16x8.relaxed_dot_i8x16_i7x16_s(o, hi)));
}

@inline function pairLut4I8(w0: usize, w1: usize, t0: usize, t1: usize, q: usize, ds: usize, corr: usize, cols: i32, out0: usize, out1: usize): void {
  const bias = i8x16.splat(64);
  const a = i8x16.add(v128.load(t0), bias), b = i8x16.add(v128.load(t1), bias);
  const nb = cols >> 5;
  let acc0 = f32x4.splat(0), acc1 = f32x4.splat(0);
  for (let k = 0; k < nb; k++) {
    const qp = q + (<usize>k << 5), wo = <usize>k << 4;
    const e = v128.load(qp), o = v128.load(qp, 16);
    // The block's sum is spread over four lanes: its correction goes in one.
    const c = i32x4.replace_lane(i32x4.splat(0), 0, load<i32>(corr + (<usize>k << 2)) << 3);
    const dd = v128.load32_splat(ds + (<usize>k << 2));
    acc0 = f32x4.add(acc0, f32x4.mul(f32x4.convert_i32x4_s(i32x4.sub(blockLut4I8(a, v128.load(w0 + wo), e, o), c)), dd));
    acc1 = f32x4.add(acc1, f32x4.mul(f32x4.convert_i32x4_s(i32x4.sub(blockLut4I8(b, v128.load(w1 + wo), e, o), c)), dd));
  }
  let s0 = hsum(acc0), s1 = hsum(acc1);
  const b0 = nb << 5;
  if (b0 < cols) {
    // The partial block: natural order, unbiased table values.
    let p = 0, u = 0;
    for (let i = b0; i < cols; i++) {
      const x = <i32>load<i8>(q + <usize>i);
      p += <i32>load<i8>(t0 + <usize>codeAt(w0, i, 4)) * x;
      u += <i32>load<i8>(t1 + <usize>codeAt(w1, i, 4)) * x;
    }
    const e = load<f32>(ds + (<usize>nb << 2));
    s0 += e * <f32>p;
    s1 += e * <f32>u;
  }
  store<f32>(out0, s0);
  store<f32>(out1, s1);
}

/**
 * Row r's int8 table values as i16 for the q8 GEMM, laid out like the activations (full blocks of
 * lut4..7 split, the rest natural) and zero-padded to whole blocks of 32.
 */
export function widenLut(d: usize, r: i32, dst: usize): void {
  const bits = bitsOf(d);
  if (bits == 4) widenRow(d, r, dst, 4, 1);
  else if (bits == 1) widenRow(d, r, dst, 1, 1);
  else if (bits == 2) widenRow(d, r, dst, 2, 1);
  else if (bits == 3) widenRow(d, r, dst, 3, 1);
  else if (bits == 5) widenRow(d, r, dst, 5, 2);
  else if (bits == 6) widenRow(d, r, dst, 6, 4);
  else widenRow(d, r, dst, 7, 8);
}

@inline function widenRow(d: usize, r: i32, dst: usize, bits: i32, chunks: i32): void {
  const cols = colsOf(d);
  const w = rowPtr(d, r), t = rowTableI8(d, r);
  const c0 = chunkOf(t, 0, chunks), c1 = chunkOf(t, 1, chunks), c2 = chunkOf(t, 2, chunks), c3 = chunkOf(t, 3, chunks);
  const c4 = chunkOf(t, 4, chunks), c5 = chunkOf(t, 5, chunks), c6 = chunkOf(t, 6, chunks), c7 = chunkOf(t, 7, chunks);
  const full = cols & ~31;
  for (let b0 = 0; b0 < full; b0 += 32) {
    const p = w + <usize>((b0 >> 3) * bits);
    const a = half(p, c0, c1, c2, c3, c4, c5, c6, c7, bits, chunks, false), b = half(p, c0, c1, c2, c3, c4, c5, c6, c7, bits, chunks, true), o = dst + (<usize>b0 << 1);
    v128.store(o, i16x8.extend_low_i8x16_s(a));
    v128.store(o, i16x8.extend_high_i8x16_s(a), 16);
    v128.store(o, i16x8.extend_low_i8x16_s(b), 32);
    v128.store(o, i16x8.extend_high_i8x16_s(b), 48);
  }
  for (let i = full; i < cols; i++) store<i16>(dst + (<usize>i << 1), <i16>load<i8>(t + <usize>codeAt(w, i, bits)));
  for (let i = cols; i < ((cols + 31) & ~31); i++) store<i16>(dst + (<usize>i << 1), 0);
}

/**
 * lut5..7 (bits) codes of the bitstream rows at data (stride bytes apart) re-laid out in place into
 * the planar layout (a block is read whole before it is written; a partial last block stays as it
 * is): per full block of 32, 16 bytes whose nibble i is code i's low 4 bits (byte j: code 2j, then
 * code 2j + 1), then per code bit 4 + h a 4-byte plane in which byte k's bit n is that bit of code
 * 2(4n + k) (n < 4) or of code 2(4(n − 4) + k) + 1 (what planeBytes and maskOf read).
 */
export function lutToPlanar(data: usize, rows: i32, cols: i32, bits: i32, stride: i32): void {
  if (bits == 5) planarRows(data, rows, cols, 5, stride);
  else if (bits == 6) planarRows(data, rows, cols, 6, stride);
  else planarRows(data, rows, cols, 7, stride);
}

@inline function planarRows(data: usize, rows: i32, cols: i32, bits: i32, stride: i32): void {
  const full = cols & ~31, mask: u64 = (1 << bits) - 1;
  for (let r = 0; r < rows; r++) {
    const row = <usize>r * <usize>stride;
    for (let b0 = 0; b0 < full; b0 += 32) {
      const p = row + <usize>((b0 >> 3) * bits);
      let l0: u64 = 0, l1: u64 = 0, h0: u32 = 0, h1: u32 = 0, h2: u32 = 0;
      // Eight codes at a time: 8·bits bits are bits whole bytes.
      for (let g = 0; g < 4; g++) {
        const word = load<u64>(data + p + <usize>(g * bits));
        for (let e = 0; e < 8; e++) {
          const i = (g << 3) + e;
          const c = <u32>((word >> <u64>(e * bits)) & mask);
          if (g < 2) l0 |= <u64>(c & 15) << <u64>(i << 2);
          else l1 |= <u64>(c & 15) << <u64>((i - 16) << 2);
          const at = <u32>(((i >> 1) & 3) << 3) + <u32>(i >> 3) + <u32>((i & 1) << 2);
          h0 |= ((c >> 4) & 1) << at;
          if (bits > 5) h1 |= ((c >> 5) & 1) << at;
          if (bits > 6) h2 |= ((c >> 6) & 1) << at;
        }
      }
      store<u64>(data + p, l0);
      store<u64>(data + p, l1, 8);
      store<u32>(data + p, h0, 16);
      if (bits > 5) store<u32>(data + p, h1, 20);
      if (bits > 6) store<u32>(data + p, h2, 24);
    }
  }
}

/**
 * Rows r0..r0 + rows − 1 of a b-bit code bitstream (bits 5..8; rows stride bytes apart at src)
 * written as their int8 table values to dst, cols bytes a row: the repacked form, run by the int8
 * kernels. Row r's table is at tables + (group ? r / group : 0) · 2^bits (lutQ8Tables' codes).
 * Reads up to 7 bytes past a row's last code.
 */
export function lutToInt8(src: usize, dst: usize, r0: i32, rows: i32, cols: i32, bits: i32, stride: i32, tables: usize, group: i32): void {
  if (bits == 5) int8Rows(src, dst, r0, rows, cols, 5, stride, tables, group);
  else if (bits == 6) int8Rows(src, dst, r0, rows, cols, 6, stride, tables, group);
  else if (bits == 7) int8Rows(src, dst, r0, rows, cols, 7, stride, tables, group);
  else int8Rows(src, dst, r0, rows, cols, 8, stride, tables, group);
}

@inline function int8Rows(src: usize, dst: usize, r0: i32, rows: i32, cols: i32, bits: i32, stride: i32, tables: usize, group: i32): void {
  const mask: u64 = (1 << bits) - 1, full = cols & ~7;
  for (let r = 0; r < rows; r++) {
    const row = src + <usize>r * <usize>stride, out = dst + <usize>r * <usize>cols;
    const t = tables + (group != 0 ? <usize>((r0 + r) / group) << bits : 0);
    // Eight codes at a time: 8·bits bits are bits whole bytes.
    for (let i = 0; i < full; i += 8) {
      const word = load<u64>(row + <usize>((i >> 3) * bits));
      for (let e = 0; e < 8; e++) store<i8>(out + <usize>(i + e), load<i8>(t + <usize>((word >> <u64>(e * bits)) & mask)));
    }
    for (let i = full; i < cols; i++) store<i8>(out + <usize>i, load<i8>(t + <usize>codeAt(row, i, bits)));
  }
}

/**
 * lut1..3 (bits) code bitstream rows (stride bytes apart at src) rewritten as lut4 rows of
 * (cols + 1) / 2 bytes at dst, a code a nibble (the lut4 layout: even codes low): the repacked form,
 * run by the lut4 kernels against the table padded to 16 entries. Reads up to 7 bytes past a row.
 */
export function lutToNibbles(src: usize, dst: usize, rows: i32, cols: i32, bits: i32, stride: i32): void {
  if (bits == 1) nibbleRows(src, dst, rows, cols, 1, stride);
  else if (bits == 2) nibbleRows(src, dst, rows, cols, 2, stride);
  else nibbleRows(src, dst, rows, cols, 3, stride);
}

@inline function nibbleRows(src: usize, dst: usize, rows: i32, cols: i32, bits: i32, stride: i32): void {
  const mask: u64 = (1 << bits) - 1, full = cols & ~7, out = (cols + 1) >> 1;
  for (let r = 0; r < rows; r++) {
    const row = src + <usize>r * <usize>stride, o = dst + <usize>r * <usize>out;
    for (let i = 0; i < full; i += 8) {
      const word = load<u64>(row + <usize>((i >> 3) * bits));
      let n: u32 = 0;
      for (let e = 0; e < 8; e++) n |= <u32>((word >> <u64>(e * bits)) & mask) << <u32>(e << 2);
      store<u32>(o + <usize>(i >> 1), n);
    }
    for (let i = full; i < cols; i++) {
      const c = <u8>codeAt(row, i, bits), at = o + <usize>(i >> 1);
      if ((i & 1) == 0) store<u8>(at, c);
      else store<u8>(at, load<u8>(at) | (c << 4));
    }
  }
}
