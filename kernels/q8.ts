// q8 activations (the Q8_0 rule): per block of 32 inputs d = amax/127 (f32), code = nearest(x · (1/d))
// (f32 product, ties to even), clamped to ±127. The reference backend (src/backend/reference/q8.ts)
// runs the same f32 op sequence, so both see identical codes. Codes are stored as i16 so the
// weight kernels can use i32x4.dot_i16x8_s. Layouts per block of 32:
//   natural (int8 weights): element j at j;
//   quad (int4 weights): 4 groups of 8, group j holding elements 4k + j: read as i16 lanes, a
//   block's 16 nibble bytes give element 4k + j in bits 4j..4j+3 of lane k, so `(v >> 4j) & 15`
//   lines up with group j without any byte shuffling or widening. quantizeQ8 then also stores
//   corr[k] = (8·Σ codes of block k, 0, 0, 0) so the kernels can use the unsigned nibbles 0..15.
//   split (lut4 weights): the 16 even elements, then the 16 odd ones: a block's 16 code bytes give
//   the even elements in their low nibbles and the odd ones in their high nibbles, in that order.
// A partial last block is always natural order, zero-padded to 32.
import { hsum, hmax } from './dot';
import { nibble } from './decode';

/** Blocks of 32 in a row of `cols` inputs. */
@inline export function q8Blocks(cols: i32): i32 {
  return (cols + 31) >> 5;
}

/** Bytes of codes per token (i16, padded to whole blocks). */
@inline export function q8RowBytes(cols: i32): usize {
  return <usize>q8Blocks(cols) << 6;
}

export const NATURAL: i32 = 0, QUAD: i32 = 1, SPLIT: i32 = 2;

/** Quantize x[cols] into codes q (i16) and block scales ds (f32) in a layout above (QUAD: + corr). */
export function quantizeQ8(x: usize, cols: i32, q: usize, ds: usize, layout: i32, corr: usize = 0): void {
  const full = cols & ~31;
  let b0 = 0;
  for (; b0 < full; b0 += 32) {
    const xp = x + (<usize>b0 << 2);
    const id = blockScale(xp, 32, ds + (<usize>(b0 >> 5) << 2));
    const qp = q + (<usize>b0 << 1);
    if (layout == NATURAL) {
      const vid = f32x4.splat(id);
      for (let j = 0; j < 32; j += 8) {
        v128.store(qp + (<usize>j << 1), i16x8.narrow_i32x4_s(codes4(xp + (<usize>j << 2), vid), codes4(xp + (<usize>j << 2) + 16, vid)));
      }
    } else if (layout == SPLIT) {
      const vid = f32x4.splat(id);
      const n0 = i16x8.narrow_i32x4_s(codes4(xp, vid), codes4(xp + 16, vid)), n1 = i16x8.narrow_i32x4_s(codes4(xp + 32, vid), codes4(xp + 48, vid));
      const n2 = i16x8.narrow_i32x4_s(codes4(xp + 64, vid), codes4(xp + 80, vid)), n3 = i16x8.narrow_i32x4_s(codes4(xp + 96, vid), codes4(xp + 112, vid));
      v128.store(qp, v128.shuffle<i16>(n0, n1, 0, 2, 4, 6, 8, 10, 12, 14));
      v128.store(qp, v128.shuffle<i16>(n2, n3, 0, 2, 4, 6, 8, 10, 12, 14), 16);
      v128.store(qp, v128.shuffle<i16>(n0, n1, 1, 3, 5, 7, 9, 11, 13, 15), 32);
      v128.store(qp, v128.shuffle<i16>(n2, n3, 1, 3, 5, 7, 9, 11, 13, 15), 48);
    } else {
      let sum = 0;
      for (let j = 0; j < 32; j++) {
        const c = code(load<f32>(xp + (<usize>j << 2)), id);
        sum += <i32>c;
        store<i16>(qp + (<usize>(((j & 3) << 3) | (j >> 2)) << 1), c);
      }
      v128.store(corr + (<usize>(b0 >> 5) << 4), i32x4(sum << 3, 0, 0, 0));
    }
  }
  if (b0 < cols) {
    const xp = x + (<usize>b0 << 2);
    const n = cols - b0;
    const id = blockScale(xp, n, ds + (<usize>(b0 >> 5) << 2));
    const qp = q + (<usize>b0 << 1);
    for (let j = 0; j < 32; j++) store<i16>(qp + (<usize>j << 1), j < n ? code(load<f32>(xp + (<usize>j << 2)), id) : 0);
  }
}

/** The scale d = amax/127 of the n ≤ 32 inputs at xp, stored at dsAt; returns 1/d (0 for an all-zero block). */
@inline export function blockScale(xp: usize, n: i32, dsAt: usize): f32 {
  let amax: f32 = 0;
  if (n == 32) {
    // |x| as bits: for non-negative floats integer order is float order (a NaN's bits are above
    // +∞'s, so a NaN wins and the block's scale is NaN), and i32x4.max_s is one instruction where
    // f32x4.max is several.
    const abs = i32x4.splat(0x7fffffff);
    let m = v128.and(v128.load(xp), abs);
    for (let j = 4; j < 32; j += 4) m = i32x4.max_s(m, v128.and(v128.load(xp + (<usize>j << 2)), abs));
    m = i32x4.max_s(m, v128.shuffle<i32>(m, m, 2, 3, 0, 1));
    m = i32x4.max_s(m, v128.shuffle<i32>(m, m, 1, 0, 3, 2));
    amax = f32x4.extract_lane(m, 0);
  } else {
    for (let j = 0; j < n; j++) amax = max(amax, abs(load<f32>(xp + (<usize>j << 2))));
  }
  const d: f32 = amax / 127;
  store<f32>(dsAt, d);
  return d != 0 ? <f32>1 / d : 0;
}

/** Codes of the four inputs at xp as i32 lanes (vid = splat(1/d)): the same rule as code. */
@inline export function codes4(xp: usize, vid: v128): v128 {
  // Clamped first (pmin/pmax: one instruction each; ±∞ → ±127 as the reference), then rounded to
  // the nearest integer, ties to even, by adding 1.5·2^23: the sum's low bits are the code.
  // (Rounding first and clamping after gives the same codes; a NaN gives some code, but its
  // block's scale is NaN too.) Five instructions where nearest, min, max and a saturating
  // conversion took about twenty-five.
  const y = f32x4.pmax(f32x4.pmin(f32x4.mul(v128.load(xp), vid), f32x4.splat(127)), f32x4.splat(-127));
  return i32x4.sub(f32x4.add(y, f32x4.splat(12582912)), i32x4.splat(0x4b400000));
}

/** One input's code: nearest(x · (1/d)) (f32 product, ties to even), clamped to ±127. */
@inline export function code(x: f32, id: f32): i16 {
  return <i16><i32>min<f32>(127, max<f32>(-127, nearest<f32>(x * id)));
}

/**
 * Σ over blocks of (weight scale · d_k · Σ w·q) for one row of i8 codes w laid out like q.
 * sc: the row's scales; per: activation blocks per weight scale (0: one scale for the row).
 */
export function dotQ8(w: usize, q: usize, ds: usize, sc: usize, per: i32, cols: i32): f32 {
  const full = cols & ~31;
  let acc = f32x4.splat(0);
  let sp = sc, left = per;
  let b0 = 0;
  for (; b0 < full; b0 += 32) {
    const wp = w + <usize>b0, qp = q + (<usize>b0 << 1);
    let p = i32x4.dot_i16x8_s(v128.load8x8_s(wp), v128.load(qp));
    p = i32x4.add(p, i32x4.dot_i16x8_s(v128.load8x8_s(wp + 8), v128.load(qp, 16)));
    p = i32x4.add(p, i32x4.dot_i16x8_s(v128.load8x8_s(wp + 16), v128.load(qp, 32)));
    p = i32x4.add(p, i32x4.dot_i16x8_s(v128.load8x8_s(wp + 24), v128.load(qp, 48)));
    const s = load<f32>(sp) * load<f32>(ds + (<usize>(b0 >> 5) << 2));
    acc = f32x4.add(acc, f32x4.mul(f32x4.convert_i32x4_s(p), f32x4.splat(s)));
    if (--left == 0) { left = per; sp += 4; }
  }
  let total = hsum(acc);
  if (b0 < cols) {
    let p = 0;
    for (let i = b0; i < cols; i++) p += <i32>load<i8>(w + <usize>i) * <i32>load<i16>(q + (<usize>i << 1));
    total += load<f32>(sp) * load<f32>(ds + (<usize>(b0 >> 5) << 2)) * <f32>p;
  }
  return total;
}

/** The same for one int4 row (nibbles, low = even element) against quad-layout codes. */
export function dotQ4(w: usize, q: usize, ds: usize, corr: usize, sc: usize, per: i32, cols: i32): f32 {
  const full = cols & ~31;
  let acc = f32x4.splat(0);
  let sp = sc, left = per;
  let b0 = 0;
  for (; b0 < full; b0 += 32) {
    const p = i32x4.sub(i4Block(w + (<usize>b0 >> 1), q + (<usize>b0 << 1)), v128.load(corr + (<usize>(b0 >> 5) << 4)));
    acc = addBlock(acc, p, sp, v128.load32_splat(ds + (<usize>(b0 >> 5) << 2)));
    if (--left == 0) { left = per; sp += 4; }
  }
  let total = hsum(acc);
  if (b0 < cols) {
    let p = 0;
    for (let i = b0; i < cols; i++) p += nibble(w, i) * <i32>load<i16>(q + (<usize>i << 1));
    total += load<f32>(sp) * load<f32>(ds + (<usize>(b0 >> 5) << 2)) * <f32>p;
  }
  return total;
}

/** Σ nibble·code over one block as i32x4 partial sums, nibbles unsigned (0..15; see corr). */
@inline function i4Block(w: usize, q: usize): v128 {
  const b = v128.load(w), m = i16x8.splat(15);
  let p = i32x4.dot_i16x8_s(v128.and(b, m), v128.load(q));
  p = i32x4.add(p, i32x4.dot_i16x8_s(v128.and(i16x8.shr_u(b, 4), m), v128.load(q, 16)));
  p = i32x4.add(p, i32x4.dot_i16x8_s(v128.and(i16x8.shr_u(b, 8), m), v128.load(q, 32)));
  return i32x4.add(p, i32x4.dot_i16x8_s(i16x8.shr_u(b, 12), v128.load(q, 48)));
}

/** acc + p (a block's i32 sums) × weight scale at sc × activation scale e (splat). */
@inline function addBlock(acc: v128, p: v128, sc: usize, e: v128): v128 {
  return f32x4.add(acc, f32x4.mul(f32x4.convert_i32x4_s(p), f32x4.mul(v128.load32_splat(sc), e)));
}

/**
 * Two int8 rows at once against the same codes (w1 = w0 + stride, scales sc0 + scs): each
 * activation vector and block scale is loaded once for both rows; sums go to out and out + os.
 */
export function dotQ8x2(w0: usize, stride: usize, q: usize, ds: usize, sc0: usize, scs: usize, per: i32, cols: i32, out: usize, os: usize): void {
  const w1 = w0 + stride, sc1 = sc0 + scs;
  const full = cols & ~31;
  let acc0 = f32x4.splat(0), acc1 = f32x4.splat(0);
  let so = <usize>0, left = per;
  let b0 = 0;
  for (; b0 < full; b0 += 32) {
    const qp = q + (<usize>b0 << 1);
    const x0 = v128.load(qp), x1 = v128.load(qp, 16), x2 = v128.load(qp, 32), x3 = v128.load(qp, 48);
    const wa = w0 + <usize>b0, wb = w1 + <usize>b0;
    let p = i32x4.dot_i16x8_s(v128.load8x8_s(wa), x0);
    let u = i32x4.dot_i16x8_s(v128.load8x8_s(wb), x0);
    p = i32x4.add(p, i32x4.dot_i16x8_s(v128.load8x8_s(wa + 8), x1));
    u = i32x4.add(u, i32x4.dot_i16x8_s(v128.load8x8_s(wb + 8), x1));
    p = i32x4.add(p, i32x4.dot_i16x8_s(v128.load8x8_s(wa + 16), x2));
    u = i32x4.add(u, i32x4.dot_i16x8_s(v128.load8x8_s(wb + 16), x2));
    p = i32x4.add(p, i32x4.dot_i16x8_s(v128.load8x8_s(wa + 24), x3));
    u = i32x4.add(u, i32x4.dot_i16x8_s(v128.load8x8_s(wb + 24), x3));
    const e = v128.load32_splat(ds + (<usize>(b0 >> 5) << 2));
    acc0 = addBlock(acc0, p, sc0 + so, e);
    acc1 = addBlock(acc1, u, sc1 + so, e);
    if (--left == 0) { left = per; so += 4; }
  }
  let t0 = hsum(acc0), t1 = hsum(acc1);
  if (b0 < cols) {
    let p = 0, u = 0;
    for (let i = b0; i < cols; i++) {
      const c = <i32>load<i16>(q + (<usize>i << 1));
      p += <i32>load<i8>(w0 + <usize>i) * c;
      u += <i32>load<i8>(w1 + <usize>i) * c;
    }
    const e = load<f32>(ds + (<usize>(b0 >> 5) << 2));
    t0 += load<f32>(sc0 + so) * e * <f32>p;
    t1 += load<f32>(sc1 + so) * e * <f32>u;
  }
  store<f32>(out, t0);
  store<f32>(out + os, t1);
}

/** Two int4 rows at once (see dotQ8x2 and dotQ4). */
export function dotQ4x2(w0: usize, stride: usize, q: usize, ds: usize, corr: usize, sc0: usize, scs: usize, per: i32, cols: i32, out: usize, os: usize): void {
  const w1 = w0 + stride, sc1 = sc0 + scs;
  const full = cols & ~31;
  let acc0 = f32x4.splat(0), acc1 = f32x4.splat(0);
  let so = <usize>0, left = per;
  let b0 = 0;
  for (; b0 < full; b0 += 32) {
    const qp = q + (<usize>b0 << 1), k = <usize>(b0 >> 5);
    const c = v128.load(corr + (k << 4));
    const p = i32x4.sub(i4Block(w0 + (<usize>b0 >> 1), qp), c);
    const u = i32x4.sub(i4Block(w1 + (<usize>b0 >> 1), qp), c);
    const e = v128.load32_splat(ds + (k << 2));
    acc0 = addBlock(acc0, p, sc0 + so, e);
    acc1 = addBlock(acc1, u, sc1 + so, e);
    if (--left == 0) { left = per; so += 4; }
  }
  let t0 = hsum(acc0), t1 = hsum(acc1);
  if (b0 < cols) {
    let p = 0, u = 0;
    for (let i = b0; i < cols; i++) {
      const c = <i32>load<i16>(q + (<usize>i << 1));
      p += nibble(w0, i) * c;
      u += nibble(w1, i) * c;
    }
    const e = load<f32>(ds + (<usize>(b0 >> 5) << 2));
    t0 += load<f32>(sc0 + so) * e * <f32>p;
    t1 += load<f32>(sc1 + so) * e * <f32>u;
  }
  store<f32>(out, t0);
  store<f32>(out + os, t1);
}

/** [Σ lanes of a, of b, of c, of d]: two rounds of interleaves and adds. */
@inline export function gather4(a: v128, b: v128, c: v128, d: v128): v128 {
  const ab = i32x4.add(v128.shuffle<i32>(a, b, 0, 4, 1, 5), v128.shuffle<i32>(a, b, 2, 6, 3, 7));
  const cd = i32x4.add(v128.shuffle<i32>(c, d, 0, 4, 1, 5), v128.shuffle<i32>(c, d, 2, 6, 3, 7));
  return i32x4.add(v128.shuffle<i64>(ab, cd, 0, 2), v128.shuffle<i64>(ab, cd, 1, 3));
}

/** The weight scales of blocks k..k+3 of a row whose scales start at sc (per: blocks per scale, 0: one). */
@inline export function scales4(sc: usize, k: i32, per: i32): v128 {
  if (per == 1) return v128.load(sc + (<usize>k << 2));
  if (per == 0) return v128.load32_splat(sc);
  return f32x4(
    load<f32>(sc + (<usize>(k / per) << 2)),
    load<f32>(sc + (<usize>((k + 1) / per) << 2)),
    load<f32>(sc + (<usize>((k + 2) / per) << 2)),
    load<f32>(sc + (<usize>((k + 3) / per) << 2)),
  );
}

/** The weight scale of block k (see scales4). */
@inline export function scaleAt(sc: usize, k: i32, per: i32): f32 {
  return load<f32>(sc + (per == 0 ? 0 : <usize>(k / per) << 2));
}

@inline export function isum(v: v128): i32 {
  return i32x4.extract_lane(v, 0) + i32x4.extract_lane(v, 1) + i32x4.extract_lane(v, 2) + i32x4.extract_lane(v, 3);
}
