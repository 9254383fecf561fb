// Decode one weight row to f32 (prefill GEMM, embedding lookups, and the GEMV fallback for
// formats without a fused kernel). Values equal the reference backend's bit for bit:
// code × scale is one f32 rounding in both, tables and half floats are exact.
import { F32, F16, BF16, INT8, INT4, LUT, fmtOf, colsOf, rowPtr, rowScales, rowTable, blockOf, scalesPerRowOf, bitsOf, f16FiniteOf, lutPlanarOf } from './matrix';
import { bf16x4, f16x4, f16x4Finite, bf16, f16, int4x8 } from './convert';

export function decodeRow(d: usize, r: i32, dst: usize): void {
  const cols = colsOf(d);
  const src = rowPtr(d, r);
  switch (fmtOf(d)) {
    case F32: memory.copy(dst, src, <usize>cols << 2); break;
    case BF16: decodeBf16(src, cols, dst); break;
    case F16: decodeF16(src, cols, dst, f16FiniteOf(d) != 0); break;
    case INT8: decodeInt8(d, r, src, cols, dst); break;
    case INT4: decodeInt4(d, r, src, cols, dst); break;
    case LUT: decodeLut(d, r, src, cols, dst); break;
    default: unreachable();
  }
}

function decodeBf16(src: usize, n: i32, dst: usize): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) v128.store(dst + (<usize>i << 2), bf16x4(src + (<usize>i << 1)));
  for (; i < n; i++) store<f32>(dst + (<usize>i << 2), bf16(src + (<usize>i << 1)));
}

function decodeF16(src: usize, n: i32, dst: usize, finite: bool): void {
  let i = 0;
  if (finite) for (; i + 4 <= n; i += 4) v128.store(dst + (<usize>i << 2), f16x4Finite(src + (<usize>i << 1)));
  else for (; i + 4 <= n; i += 4) v128.store(dst + (<usize>i << 2), f16x4(src + (<usize>i << 1)));
  for (; i < n; i++) store<f32>(dst + (<usize>i << 2), f16(src + (<usize>i << 1)));
}

function decodeInt8(d: usize, r: i32, src: usize, cols: i32, dst: usize): void {
  const block = blockOf(d);
  const sc = rowScales(d, r);
  const perTensorOrChannel = scalesPerRowOf(d) <= 1;
  for (let b0 = 0, bi = 0; b0 < cols; b0 += block, bi++) {
    const s = load<f32>(sc + (perTensorOrChannel ? 0 : <usize>bi << 2));
    const vs = f32x4.splat(s);
    const end = min(b0 + block, cols);
    let i = b0;
    for (; i + 8 <= end; i += 8) {
      const c = v128.load8x8_s(src + <usize>i);
      const o = dst + (<usize>i << 2);
      v128.store(o, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(c)), vs));
      v128.store(o, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(c)), vs), 16);
    }
    for (; i < end; i++) store<f32>(dst + (<usize>i << 2), <f32>load<i8>(src + <usize>i) * s);
  }
}

/** int4 element i of a row (low nibble = even element), as code − 8. */
@inline export function nibble(src: usize, i: i32): i32 {
  const byte = <i32>load<u8>(src + (<usize>i >> 1));
  return ((i & 1) == 0 ? byte & 15 : byte >> 4) - 8;
}

function decodeInt4(d: usize, r: i32, src: usize, cols: i32, dst: usize): void {
  const block = blockOf(d);
  const sc = rowScales(d, r);
  const perTensorOrChannel = scalesPerRowOf(d) <= 1;
  for (let b0 = 0, bi = 0; b0 < cols; b0 += block, bi++) {
    const s = load<f32>(sc + (perTensorOrChannel ? 0 : <usize>bi << 2));
    const vs = f32x4.splat(s);
    const end = min(b0 + block, cols);
    let i = b0;
    // Odd block starts (odd G) begin mid-byte: step to an even element before the vector loop.
    if ((i & 1) != 0 && i < end) { store<f32>(dst + (<usize>i << 2), <f32>nibble(src, i) * s); i++; }
    for (; i + 8 <= end; i += 8) {
      const c = int4x8(src + (<usize>i >> 1));
      const o = dst + (<usize>i << 2);
      v128.store(o, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(c)), vs));
      v128.store(o, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(c)), vs), 16);
    }
    for (; i < end; i++) store<f32>(dst + (<usize>i << 2), <f32>nibble(src, i) * s);
  }
}

function decodeLut(d: usize, r: i32, src: usize, cols: i32, dst: usize): void {
  const bits = bitsOf(d);
  const table = rowTable(d, r);
  if (bits == 8) {
    for (let i = 0; i < cols; i++) store<f32>(dst + (<usize>i << 2), load<f32>(table + (<usize>load<u8>(src + <usize>i) << 2)));
  } else if (bits == 4) {
    for (let i = 0; i < cols; i++) {
      const byte = <u32>load<u8>(src + (<usize>i >> 1));
      const code = (i & 1) == 0 ? byte & 15 : byte >> 4;
      store<f32>(dst + (<usize>i << 2), load<f32>(table + (<usize>code << 2)));
    }
  } else {
    // LSB-first bitstream; a code spans at most two bytes (b ≤ 8). Allocations are padded, so
    // reading the byte after the last one is safe. Planar blocks (lut5..7 with q8 activations, the
    // lut-q8.ts lutToPlanar) first: a nibble, then one bit per plane.
    const mask: u32 = (1 << bits) - 1;
    const planar = lutPlanarOf(d) != 0 ? cols & ~31 : 0;
    for (let i = 0; i < planar; i++) {
      const p = src + (<usize>(i >> 5) * <usize>bits << 2), j = (i & 31) >> 1, odd = i & 1;
      let code = (<u32>load<u8>(p + <usize>j) >> (<u32>odd << 2)) & 15;
      const n = <u32>((j >> 2) + (odd << 2));
      for (let h = 0; h < bits - 4; h++) code |= ((<u32>load<u8>(p + 16 + <usize>(h << 2) + <usize>(j & 3)) >> n) & 1) << (4 + h);
      store<f32>(dst + (<usize>i << 2), load<f32>(table + (<usize>code << 2)));
    }
    for (let i = planar, bit = planar * bits; i < cols; i++, bit += bits) {
      const pair = <u32>load<u16>(src + (<usize>bit >> 3));
      const code = (pair >> (<u32>bit & 7)) & mask;
      store<f32>(dst + (<usize>i << 2), load<f32>(table + (<usize>code << 2)));
    }
  }
}
