// The weight descriptor every backend understands. Matrices are [out, in], row-major.
// Plain formats hold values; quantized formats hold codes plus scales or tables, and backends
// dequantize on the fly: nothing is expanded to f32 at load. What each format implies (name,
// sizes, stored parts, shape rule, GGUF type, row decoder) is in one table: src/model/formats.ts.

export type PlainDtype = 'f32' | 'f16' | 'bf16';

export type WeightFormat =
  | { kind: PlainDtype }
  | { kind: 'int8' | 'int4'; group: number | 'c' | 't' }
  | { kind: 'lut'; bits: number; group: number };

/**
 * Layouts (matrix [out, in] = [rows, cols], row-major; every row starts on a byte boundary):
 *
 * - f32 / f16 / bf16: `data` holds the values, little-endian.
 * - int8:G  `data` = one signed byte per element (Int8 view). Value = code × scale.
 *   `scales` = f32: [rows, cols/G] for a numeric G (cols % G == 0), [rows] for G='c', [1] for 't'.
 *   int8:32 follows ggml's Q8_0 rule (scale = f16(amax/127), code = round(x·127/amax)), so it is
 *   value-identical to Q8_0.
 * - int4:G  `data` = two codes per byte, element 2k in the low nibble, 2k+1 in the high nibble,
 *   ceil(cols/2) bytes per row. Value = (nibble − 8) × scale; scales as for int8. int4:32 follows
 *   Q4_0's rule (scale = f16(signed max / −8), nibble = min(15, trunc(x/scale + 8.5))).
 * - lut<b>:G `data` = b-bit codes as an LSB-first bitstream per row, ceil(cols·b/8) bytes per row.
 *   `table` = f32 [rows/G, 2^b] (G = 0: one table [1, 2^b] for the whole tensor); row r uses
 *   table row floor(r / G). Value = table[code].
 */
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

export function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * A tensor as the matrix it is stored as: [rows, cols] with cols the last dimension and rows all
 * the others (a vector is one row; a stack of experts [E, out, in] is E·out rows).
 */
export function matrixShape(shape: number[]): [number, number] {
  const cols = shape[shape.length - 1];
  return [numel(shape) / cols, cols];
}
