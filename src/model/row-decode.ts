// One row of a weight decoded to f32, per format kind: the dequantizer the reference backend, the
// row readers, conversion and inspect share (src/model/formats.ts points each kind at its own).
// Layouts are described in src/model/weight.ts.
import { f16Table32 } from '../util/half.js';

/**
 * Decode the row whose bytes start at bytes[at] into dst (the row's length). `aux` holds the
 * scales (int) or table (lut) the row uses from aux[auxAt]; plain formats ignore it.
 */
export type RowDecode = (bytes: Uint8Array, at: number, aux: Float32Array, auxAt: number, dst: Float32Array) => void;

export function f32Row(cols: number): RowDecode {
  return (bytes, at, _aux, _a, dst) => new Uint8Array(dst.buffer, dst.byteOffset, cols * 4).set(bytes.subarray(at, at + cols * 4));
}

/** The row's 16-bit values: a view where they are aligned, else a copy. */
function halves(bytes: Uint8Array, at: number, cols: number): Uint16Array {
  const start = bytes.byteOffset + at;
  return start % 2 === 0 ? new Uint16Array(bytes.buffer, start, cols) : new Uint16Array(bytes.slice(at, at + 2 * cols).buffer);
}

export function f16Row(cols: number): RowDecode {
  const t = f16Table32();
  return (bytes, at, _aux, _a, dst) => {
    const h = halves(bytes, at, cols);
    for (let i = 0; i < cols; i++) dst[i] = t[h[i]];
  };
}

export function bf16Row(cols: number): RowDecode {
  return (bytes, at, _aux, _a, dst) => {
    const h = halves(bytes, at, cols);
    const u = new Uint32Array(dst.buffer, dst.byteOffset, cols);
    for (let i = 0; i < cols; i++) u[i] = h[i] << 16;
  };
}

/** int8: one signed byte per value, × the scale of its block of `block` columns. */
export function int8Row(cols: number, block: number): RowDecode {
  return (bytes, at, aux, a, dst) => {
    for (let i0 = 0, b = a; i0 < cols; i0 += block, b++) {
      const scale = aux[b];
      const end = Math.min(cols, i0 + block);
      for (let i = i0; i < end; i++) dst[i] = ((bytes[at + i] << 24) >> 24) * scale;
    }
  };
}

/** int4: value 2k in the low nibble of byte k, 2k+1 in the high one; (nibble − 8) × the block's scale. */
export function int4Row(cols: number, block: number): RowDecode {
  return (bytes, at, aux, a, dst) => {
    for (let i0 = 0, b = a; i0 < cols; i0 += block, b++) {
      const scale = aux[b];
      const end = Math.min(cols, i0 + block);
      for (let i = i0; i < end; i++) {
        const byte = bytes[at + (i >> 1)];
        dst[i] = (((i & 1) === 0 ? byte & 15 : byte >> 4) - 8) * scale;
      }
    }
  };
}

/** lut: b-bit codes LSB-first from the row's first byte, each an index into the row's table. */
export function lutRow(cols: number, bits: number): RowDecode {
  const mask = (1 << bits) - 1;
  return (bytes, at, aux, a, dst) => {
    // A code spans at most two bytes (b ≤ 8); past the end of `bytes` the second reads as 0.
    let bit = at * 8;
    for (let i = 0; i < cols; i++, bit += bits) {
      const pair = bytes[bit >> 3] | ((bytes[(bit >> 3) + 1] ?? 0) << 8);
      dst[i] = aux[a + ((pair >> (bit & 7)) & mask)];
    }
  };
}
