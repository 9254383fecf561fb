// The weight descriptor every backend understands. Matrices are [out, in], row-major.
// Plain formats hold values; quantized formats (issue: convert and quantize) hold codes plus
// scales or tables, and backends dequantize on the fly: nothing is expanded to f32 at load.
import { bf16ArrayToF32, f16ArrayToF32 } from '../util/half.js';
import { LutraError } from '../util/errors.js';

export type PlainDtype = 'f32' | 'f16' | 'bf16';

export type WeightFormat =
  | { kind: PlainDtype }
  | { kind: 'int8' | 'int4'; group: number | 'c' | 't' }
  | { kind: 'lut'; bits: number; group: number };

export interface WeightTensor {
  name: string;
  shape: number[];
  format: WeightFormat;
  /** Plain values (little-endian) or quantization codes. */
  data: Uint8Array;
  scales?: Float32Array;
  table?: Float32Array;
  /** Where it was read from, for error messages. */
  source: string;
}

export const BYTES_PER_ELEMENT: Record<PlainDtype, number> = { f32: 4, f16: 2, bf16: 2 };

export function formatName(f: WeightFormat): string {
  switch (f.kind) {
    case 'int8':
    case 'int4':
      return `${f.kind}:${f.group}`;
    case 'lut':
      return `lut${f.bits}:${f.group}`;
    default:
      return f.kind;
  }
}

export function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Decode a plain-format tensor to f32 (for export and conversion; the runtime never does this). */
export function plainToF32(w: WeightTensor): Float32Array {
  const { buffer, byteOffset, byteLength } = w.data;
  switch (w.format.kind) {
    case 'f32':
      return new Float32Array(buffer, byteOffset, byteLength / 4).slice();
    case 'bf16':
      return bf16ArrayToF32(new Uint16Array(buffer, byteOffset, byteLength / 2));
    case 'f16':
      return f16ArrayToF32(new Uint16Array(buffer, byteOffset, byteLength / 2));
    default:
      throw new LutraError(`${w.source}: tensor "${w.name}" is ${formatName(w.format)}; only plain f32/f16/bf16 can be decoded here`);
  }
}
