// prepare(): copy a weight's bytes (and scales or table) into the arena once, and write the
// 48-byte descriptor the kernels read (kernels/matrix.ts has the same layout).
import type { Matrix } from '../backend.js';
import type { WeightFormat, WeightTensor } from '../../model/weight.js';
import { auxLayout, formatName, intBlock, rowBytes } from '../../model/formats.js';
import { LutraError } from '../../util/errors.js';
import type { Arena } from './arena.js';
import { usesQ8 } from '../reference/q8.js';

export interface WasmMatrix extends Matrix {
  /** Address of the descriptor. */
  readonly desc: number;
  /** Bytes of weight data (codes + scales/table), for bandwidth figures. */
  readonly bytes: number;
  /** matmul quantizes activations to q8 (see usesQ8). */
  readonly q8: boolean;
}

const FORMAT_CODE = { f32: 0, f16: 1, bf16: 2, int8: 3, int4: 4, lut: 5 } as const;
const DESC_BYTES = 48;

/** q8: quantize activations for this weight where usesQ8 allows (the reference's rule). */
export function prepareMatrix(arena: Arena, w: WeightTensor, q8 = false): WasmMatrix {
  const where = `${w.source}: tensor "${w.name}" (${formatName(w.format)})`;
  if (w.shape.length !== 2) throw new LutraError(`${w.source}: tensor "${w.name}" should be 2-D, has shape [${w.shape}]`);
  const [rows, cols] = w.shape;
  const f = w.format;
  const stride = rowBytes(f, cols);
  if (w.data.byteLength !== rows * stride) throw new LutraError(`${where} has ${w.data.byteLength} bytes, expected ${rows * stride}`);

  let aux = 0;
  let auxBytes = 0;
  const layout = auxLayout(f, rows, cols);
  if (layout) {
    const values = w[layout.name];
    if (!values) throw new LutraError(`${where} has no ${layout.name}`);
    if (values.length !== layout.count) throw new LutraError(`${where} has ${values.length} ${layout.what}, expected ${layout.count}`);
    aux = arena.copyIn(bytesOf(values));
    auxBytes = values.byteLength;
  }
  const data = arena.copyIn(w.data);

  const desc = arena.bytes(DESC_BYTES);
  const d = new Int32Array(arena.memory.buffer, desc, DESC_BYTES / 4);
  const useQ8 = q8 && usesQ8(f);
  d.set([FORMAT_CODE[f.kind], data, rows, cols, aux, ...kernelFields(f, cols), stride, useQ8 ? 1 : 0, f.kind === 'f16' && allFiniteF16(w.data) ? 1 : 0]);
  return { name: w.name, rows, cols, desc, bytes: w.data.byteLength + auxBytes, q8: useQ8 };
}

/** The descriptor's per-kind fields: scales per row (0: one for the tensor) and block (int), bits and table group (lut). */
function kernelFields(f: WeightFormat, cols: number): [perRow: number, block: number, bits: number, tableGroup: number] {
  switch (f.kind) {
    case 'int8':
    case 'int4':
      return [f.group === 't' ? 0 : cols / intBlock(f, cols), intBlock(f, cols), 0, 0];
    case 'lut':
      return [0, cols, f.bits, f.group];
    default:
      return [0, cols, 0, 0];
  }
}

/** No f16 Inf/NaN (exponent 31) in the data: the kernels may use their 4-op conversion. */
function allFiniteF16(data: Uint8Array): boolean {
  const d = data.byteOffset % 2 === 0 ? data : data.slice();
  const h = new Uint16Array(d.buffer, d.byteOffset, d.byteLength >> 1);
  for (let i = 0; i < h.length; i++) if ((h[i] & 0x7c00) === 0x7c00) return false;
  return true;
}

function bytesOf(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}
