// Exact re-packing between lutra's int8:32 / int4:32 and ggml's Q8_0 / Q4_0 blocks. The values
// are the same by construction (src/quant/linear.ts follows ggml's rules), so moving between the
// two is a byte shuffle: no dequantization, no requantization, no rounding.
//
//   Q8_0 block (34 bytes): f16 scale, then 32 int8 codes in element order.
//   Q4_0 block (18 bytes): f16 scale, then 16 bytes; byte j = element j (low nibble) | element j+16 (high).
//   lutra int8:32: codes rows × cols int8, scales f32 [rows × cols/32] holding f16 values.
//   lutra int4:32: per row ceil(cols/2) bytes; byte k = element 2k (low) | element 2k+1 (high).
import { LutraError } from '../util/errors.js';
import { f16BitsToF32, f32ToF16Bits } from '../util/half.js';
import { matrixShape, type WeightTensor } from '../model/weight.js';
import { formatName, formatOfGgml, sameFormat } from '../model/formats.js';

const QK = 32;

function blocksOf(rows: number, cols: number, what: string): number {
  if (cols % QK !== 0) throw new LutraError(`${what}: ${cols} columns are not a multiple of the ggml block size ${QK}`);
  return (rows * cols) / QK;
}

const rowsCols = matrixShape;

function expect(w: WeightTensor, type: 'Q8_0' | 'Q4_0'): void {
  const f = formatOfGgml(type)!;
  if (!sameFormat(w.format, f) || !w.scales) {
    throw new LutraError(`${w.source}: tensor "${w.name}" is ${formatName(w.format)}; only ${formatName(f)} maps exactly onto ${type}`);
  }
}

/** int8:32 → Q8_0 bytes. */
export function int8ToQ8_0(w: WeightTensor): Uint8Array {
  expect(w, 'Q8_0');
  const [rows, cols] = rowsCols(w.shape);
  const nb = blocksOf(rows, cols, `tensor "${w.name}"`);
  const out = new Uint8Array(nb * 34);
  const dv = new DataView(out.buffer);
  for (let b = 0; b < nb; b++) {
    dv.setUint16(b * 34, f32ToF16Bits(w.scales![b]), true);
    out.set(w.data.subarray(b * QK, (b + 1) * QK), b * 34 + 2);
  }
  return out;
}

/** Q8_0 bytes → int8:32 codes and scales. */
export function q8_0ToInt8(bytes: Uint8Array, rows: number, cols: number, what: string): { codes: Uint8Array; scales: Float32Array } {
  const nb = blocksOf(rows, cols, what);
  if (bytes.byteLength !== nb * 34) throw new LutraError(`${what}: ${bytes.byteLength} bytes, Q8_0 [${rows}, ${cols}] needs ${nb * 34}`);
  const codes = new Uint8Array(rows * cols);
  const scales = new Float32Array(nb);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let b = 0; b < nb; b++) {
    scales[b] = f16BitsToF32(dv.getUint16(b * 34, true));
    codes.set(bytes.subarray(b * 34 + 2, b * 34 + 34), b * QK);
  }
  return { codes, scales };
}

/** int4:32 → Q4_0 bytes. Rows hold whole blocks (cols % 32 == 0), so row padding never occurs. */
export function int4ToQ4_0(w: WeightTensor): Uint8Array {
  expect(w, 'Q4_0');
  const [rows, cols] = rowsCols(w.shape);
  const nb = blocksOf(rows, cols, `tensor "${w.name}"`);
  const out = new Uint8Array(nb * 18);
  const dv = new DataView(out.buffer);
  const nib = (i: number) => (w.data[i >> 1] >> ((i & 1) * 4)) & 15; // element i of the flat tensor
  for (let b = 0; b < nb; b++) {
    dv.setUint16(b * 18, f32ToF16Bits(w.scales![b]), true);
    const e0 = b * QK;
    for (let j = 0; j < QK / 2; j++) out[b * 18 + 2 + j] = nib(e0 + j) | (nib(e0 + j + QK / 2) << 4);
  }
  return out;
}

/** Q4_0 bytes → int4:32 codes and scales. */
export function q4_0ToInt4(bytes: Uint8Array, rows: number, cols: number, what: string): { codes: Uint8Array; scales: Float32Array } {
  const nb = blocksOf(rows, cols, what);
  if (bytes.byteLength !== nb * 18) throw new LutraError(`${what}: ${bytes.byteLength} bytes, Q4_0 [${rows}, ${cols}] needs ${nb * 18}`);
  const codes = new Uint8Array((rows * cols) / 2);
  const scales = new Float32Array(nb);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let b = 0; b < nb; b++) {
    scales[b] = f16BitsToF32(dv.getUint16(b * 18, true));
    const e0 = b * QK;
    for (let j = 0; j < QK / 2; j++) {
      const v = bytes[b * 18 + 2 + j];
      // Element e0+j takes the low nibble, e0+j+16 the high one; both land in lutra's pair order.
      for (const [e, q] of [[e0 + j, v & 15], [e0 + j + QK / 2, v >> 4]]) codes[e >> 1] |= (e & 1) === 0 ? q : q << 4;
    }
  }
  return { codes, scales };
}
