// Decode (T = 1): out[r] = w[r]·x for rows r0..r1, weights dequantized in registers as they
// stream past. Bandwidth-bound, so the aim is few instructions per weight byte.
import { F32, F16, BF16, INT8, INT4, LUT, fmtOf, colsOf, rowPtr, rowScales, rowTable, blockOf, scalesPerRowOf, bitsOf, q8Of, q8PerScale, strideOf, f16FiniteOf } from './matrix';
import { q8Blocks, q8RowBytes, dotQ8, dotQ4, dotQ8x2, dotQ4x2 } from './q8';
import { dotQ4x2I8 } from './q4-relaxed';
import { gemvLutQ8, gemvLut4I8 } from './lut-q8';
import { bf16x4, f16x4, f16x4Finite, bf16, f16 } from './convert';
import { dot, hsum, madd } from './dot';
import { decodeRow } from './decode';

export function gemv(d: usize, x: usize, out: usize, r0: i32, r1: i32, scratch: usize): void {
  const fmt = fmtOf(d);
  const cols = colsOf(d);
  const block = blockOf(d);
  if (q8Of(d) && fmt == LUT) {
    if (ASC_FEATURE_RELAXED_SIMD && bitsOf(d) == 4) gemvLut4I8(d, x, out, r0, r1);
    else gemvLutQ8(d, x, out, r0, r1);
  } else if (q8Of(d)) {
    // q8 activations, quantized by the host (quantizeTokens) once for all chunks of rows: codes at
    // x, block scales and corrections after them; integer dot products per row.
    const int4 = fmt == INT4;
    const i8 = int4 && ASC_FEATURE_RELAXED_SIMD; // the relaxed build's int4 kernels (q4-relaxed.ts)
    const q = x;
    const ds = q + q8RowBytes(cols);
    const corr = ds + (<usize>q8Blocks(cols) << 2);
    const per = q8PerScale(d);
    const stride = <usize>strideOf(d), scs = <usize>scalesPerRowOf(d) << 2;
    // Rows in pairs (activation codes and block scales loaded once for both), the pair's rows half
    // the range apart: two sequential streams, which the prefetchers follow (adjacent rows, read
    // alternately, streamed from DRAM at half the speed).
    let r = r0;
    const h = (r1 - r) >> 1;
    const pw = <usize>h * stride, ps = <usize>h * scs, po = <usize>h << 2;
    // Row, scale and output pointers stepped, not recomputed from the descriptor for every row.
    let w = rowPtr(d, r), sc = rowScales(d, r), o = out + (<usize>r << 2);
    for (const r2 = r + h; r < r2; r++, w += stride, sc += scs, o += 4) {
      if (i8) dotQ4x2I8(w, pw, q, ds, corr, sc, ps, per, cols, o, po);
      else if (int4) dotQ4x2(w, pw, q, ds, corr, sc, ps, per, cols, o, po);
      else dotQ8x2(w, pw, q, ds, sc, ps, per, cols, o, po);
    }
    if (((r1 - r0) & 1) != 0) {
      const r = r1 - 1;
      if (i8) dotQ4x2I8(rowPtr(d, r), 0, q, ds, corr, rowScales(d, r), 0, per, cols, out + (<usize>r << 2), 0);
      else store<f32>(out + (<usize>r << 2), int4 ? dotQ4(rowPtr(d, r), q, ds, corr, rowScales(d, r), per, cols) : dotQ8(rowPtr(d, r), q, ds, rowScales(d, r), per, cols));
    }
  } else if (fmt == F32) {
    for (let r = r0; r < r1; r++) store<f32>(out + (<usize>r << 2), dot(rowPtr(d, r), x, cols));
  } else if (fmt == BF16) {
    // Rows in pairs half the range apart, as the q8 path: each input vector loaded once for both.
    const h = (r1 - r0) >> 1;
    const pw = <usize>h * <usize>strideOf(d);
    for (let r = r0; r < r0 + h; r++) dotBf16x2(rowPtr(d, r), pw, x, cols, out + (<usize>r << 2), <usize>h << 2);
    if (((r1 - r0) & 1) != 0) dotBf16x2(rowPtr(d, r1 - 1), 0, x, cols, out + (<usize>(r1 - 1) << 2), 0); // the odd row as its own pair
  } else if (fmt == F16) {
    // Paired as bf16; the finite flag is a constant at each call, so inlining keeps one conversion.
    // The two loops stay written out: passed through a second inlined helper the flag is no longer
    // folded and both conversions run under a select (2.2× slower, as W51's shared version).
    const h = (r1 - r0) >> 1;
    const pw = <usize>h * <usize>strideOf(d), po = <usize>h << 2;
    const odd = ((r1 - r0) & 1) != 0, last = r1 - 1;
    if (f16FiniteOf(d)) {
      for (let r = r0; r < r0 + h; r++) dotF16x2(rowPtr(d, r), pw, x, cols, out + (<usize>r << 2), po, true);
      if (odd) dotF16x2(rowPtr(d, last), 0, x, cols, out + (<usize>last << 2), 0, true);
    } else {
      for (let r = r0; r < r0 + h; r++) dotF16x2(rowPtr(d, r), pw, x, cols, out + (<usize>r << 2), po, false);
      if (odd) dotF16x2(rowPtr(d, last), 0, x, cols, out + (<usize>last << 2), 0, false);
    }
  } else if (fmt == INT8 && ((block & 7) == 0 || scalesPerRowOf(d) <= 1)) {
    for (let r = r0; r < r1; r++) store<f32>(out + (<usize>r << 2), dotInt8(d, r, x, cols, block));
  } else if (fmt == INT4 && ((block & 15) == 0 || scalesPerRowOf(d) <= 1)) {
    splitEvenOdd(x, cols, scratch);
    for (let r = r0; r < r1; r++) store<f32>(out + (<usize>r << 2), dotInt4(d, r, x, scratch, cols, block));
  } else if (fmt == LUT && bitsOf(d) == 8) {
    for (let r = r0; r < r1; r++) store<f32>(out + (<usize>r << 2), dotLut8(rowPtr(d, r), rowTable(d, r), x, cols));
  } else if (fmt == LUT && bitsOf(d) == 4) {
    for (let r = r0; r < r1; r++) store<f32>(out + (<usize>r << 2), dotLut4(rowPtr(d, r), rowTable(d, r), x, cols));
  } else {
    // Generic: odd int block sizes, lut bit widths other than 4 and 8.
    for (let r = r0; r < r1; r++) {
      decodeRow(d, r, scratch);
      store<f32>(out + (<usize>r << 2), dot(scratch, x, cols));
    }
  }
}

/**
 * Two f16 rows (w0, w0 + ws) · x, to out and out + os (ws = 0: one row); `finite` (constant at
 * each call site, so inlining drops the branch) picks f16x4Finite.
 */
@inline function dotF16x2(w0: usize, ws: usize, x: usize, n: i32, out: usize, os: usize, finite: bool): void {
  const w1 = w0 + ws;
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), b0 = f32x4.splat(0), b1 = f32x4.splat(0);
  let i = 0;
  for (; i + 8 <= n; i += 8) {
    const o = <usize>i << 1, xp = x + (<usize>i << 2);
    const u = v128.load(xp), v = v128.load(xp, 16);
    a0 = madd(finite ? f16x4Finite(w0 + o) : f16x4(w0 + o), u, a0);
    b0 = madd(finite ? f16x4Finite(w1 + o) : f16x4(w1 + o), u, b0);
    a1 = madd(finite ? f16x4Finite(w0 + o + 8) : f16x4(w0 + o + 8), v, a1);
    b1 = madd(finite ? f16x4Finite(w1 + o + 8) : f16x4(w1 + o + 8), v, b1);
  }
  let s = hsum(f32x4.add(a0, a1)), t = hsum(f32x4.add(b0, b1));
  for (; i < n; i++) {
    const xv = load<f32>(x + (<usize>i << 2)), o = <usize>i << 1;
    s += f16(w0 + o) * xv;
    t += f16(w1 + o) * xv;
  }
  store<f32>(out, s);
  store<f32>(out + os, t);
}

/** Two bf16 rows (w0, w0 + ws) · x, to out and out + os: each x vector loaded once for both (ws = 0: one row). */
function dotBf16x2(w0: usize, ws: usize, x: usize, n: i32, out: usize, os: usize): void {
  const w1 = w0 + ws;
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), b0 = f32x4.splat(0), b1 = f32x4.splat(0);
  let i = 0;
  for (; i + 8 <= n; i += 8) {
    const o = <usize>i << 1, xp = x + (<usize>i << 2);
    const u = v128.load(xp), v = v128.load(xp, 16);
    a0 = madd(bf16x4(w0 + o), u, a0);
    b0 = madd(bf16x4(w1 + o), u, b0);
    a1 = madd(bf16x4(w0 + o + 8), v, a1);
    b1 = madd(bf16x4(w1 + o + 8), v, b1);
  }
  let s = hsum(f32x4.add(a0, a1)), t = hsum(f32x4.add(b0, b1));
  for (; i < n; i++) {
    const xv = load<f32>(x + (<usize>i << 2)), o = <usize>i << 1;
    s += bf16(w0 + o) * xv;
    t += bf16(w1 + o) * xv;
  }
  store<f32>(out, s);
  store<f32>(out + os, t);
}

/** int8 row, block a multiple of 8 (or the whole row): Σ_blocks scale·Σ code·x. */
function dotInt8(d: usize, r: i32, x: usize, cols: i32, block: i32): f32 {
  const w = rowPtr(d, r);
  const sc = rowScales(d, r);
  const oneScale = scalesPerRowOf(d) <= 1;
  let acc = f32x4.splat(0);
  let tail: f32 = 0;
  for (let b0 = 0, bi = 0; b0 < cols; b0 += block, bi++) {
    const s = load<f32>(sc + (oneScale ? 0 : <usize>bi << 2));
    const end = min(b0 + block, cols);
    let a0 = f32x4.splat(0), a1 = f32x4.splat(0);
    let i = b0;
    for (; i + 8 <= end; i += 8) {
      const c = v128.load8x8_s(w + <usize>i);
      const xp = x + (<usize>i << 2);
      a0 = f32x4.add(a0, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(c)), v128.load(xp)));
      a1 = f32x4.add(a1, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(c)), v128.load(xp, 16)));
    }
    acc = f32x4.add(acc, f32x4.mul(f32x4.add(a0, a1), f32x4.splat(s)));
    let t: f32 = 0;
    for (; i < end; i++) t += <f32>load<i8>(w + <usize>i) * load<f32>(x + (<usize>i << 2));
    tail += t * s;
  }
  return hsum(acc) + tail;
}

/**
 * x reordered for int4 rows: in every 16-element chunk, the 8 even elements then the 8 odd ones,
 * so the kernel can use low and high nibbles in place instead of interleaving them.
 */
function splitEvenOdd(x: usize, cols: i32, dst: usize): void {
  for (let c = 0; c + 16 <= cols; c += 16) {
    const s = x + (<usize>c << 2), o = dst + (<usize>c << 2);
    for (let j = 0; j < 8; j++) {
      store<f32>(o + (<usize>j << 2), load<f32>(s + (<usize>(2 * j) << 2)));
      store<f32>(o + (<usize>(j + 8) << 2), load<f32>(s + (<usize>(2 * j + 1) << 2)));
    }
  }
}

/**
 * int4 row, block a multiple of 16 (or the whole row, with a scalar tail). 8 bytes widen to 8 u16
 * lanes; `& 15` gives the even elements and `>> 4` the odd ones (i16 ops, cheap on x64, unlike
 * byte shifts and two-input shuffles); xs is x in splitEvenOdd order.
 */
function dotInt4(d: usize, r: i32, x: usize, xs: usize, cols: i32, block: i32): f32 {
  const w = rowPtr(d, r);
  const sc = rowScales(d, r);
  const oneScale = scalesPerRowOf(d) <= 1;
  const mask = i16x8.splat(15), eight = i16x8.splat(8);
  let acc = f32x4.splat(0);
  let tail: f32 = 0;
  for (let b0 = 0, bi = 0; b0 < cols; b0 += block, bi++) {
    const s = load<f32>(sc + (oneScale ? 0 : <usize>bi << 2));
    const end = min(b0 + block, cols);
    let a0 = f32x4.splat(0), a1 = f32x4.splat(0);
    let i = b0;
    for (; i + 16 <= end; i += 16) {
      const bytes = v128.load8x8_u(w + (<usize>i >> 1));
      const even = i16x8.sub(v128.and(bytes, mask), eight);
      const odd = i16x8.sub(i16x8.shr_u(bytes, 4), eight);
      const xp = xs + (<usize>i << 2);
      a0 = f32x4.add(a0, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(even)), v128.load(xp)));
      a1 = f32x4.add(a1, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(even)), v128.load(xp, 16)));
      a0 = f32x4.add(a0, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(odd)), v128.load(xp, 32)));
      a1 = f32x4.add(a1, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(odd)), v128.load(xp, 48)));
    }
    acc = f32x4.add(acc, f32x4.mul(f32x4.add(a0, a1), f32x4.splat(s)));
    let t: f32 = 0;
    for (; i < end; i++) {
      const byte = <i32>load<u8>(w + (<usize>i >> 1));
      t += <f32>(((i & 1) == 0 ? byte & 15 : byte >> 4) - 8) * load<f32>(x + (<usize>i << 2));
    }
    tail += t * s;
  }
  return hsum(acc) + tail;
}

/** lut8: one table load per weight; four lanes gathered then one SIMD multiply-add. */
function dotLut8(w: usize, table: usize, x: usize, n: i32): f32 {
  let acc = f32x4.splat(0);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const c = load<u32>(w + <usize>i);
    const v = f32x4(
      load<f32>(table + ((c & 0xff) << 2)),
      load<f32>(table + (((c >> 8) & 0xff) << 2)),
      load<f32>(table + (((c >> 16) & 0xff) << 2)),
      load<f32>(table + ((c >> 24) << 2)),
    );
    acc = f32x4.add(acc, f32x4.mul(v, v128.load(x + (<usize>i << 2))));
  }
  let s = hsum(acc);
  for (; i < n; i++) s += load<f32>(table + (<usize>load<u8>(w + <usize>i) << 2)) * load<f32>(x + (<usize>i << 2));
  return s;
}

/** lut4: two codes per byte, low nibble first. */
function dotLut4(w: usize, table: usize, x: usize, n: i32): f32 {
  let acc = f32x4.splat(0);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const c = <u32>load<u16>(w + (<usize>i >> 1));
    const v = f32x4(
      load<f32>(table + ((c & 15) << 2)),
      load<f32>(table + (((c >> 4) & 15) << 2)),
      load<f32>(table + (((c >> 8) & 15) << 2)),
      load<f32>(table + ((c >> 12) << 2)),
    );
    acc = f32x4.add(acc, f32x4.mul(v, v128.load(x + (<usize>i << 2))));
  }
  let s = hsum(acc);
  for (; i < n; i++) {
    const byte = <u32>load<u8>(w + (<usize>i >> 1));
    s += load<f32>(table + (<usize>((i & 1) == 0 ? byte & 15 : byte >> 4) << 2)) * load<f32>(x + (<usize>i << 2));
  }
  return s;
}
