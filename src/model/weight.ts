// The weight descriptor every backend understands. Matrices are [out, in], row-major.
// Plain formats hold values; quantized formats (issue: convert and quantize) hold codes plus
// scales or tables, and backends dequantize on the fly: nothing is expanded to f32 at load.

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

/** Bytes per row of `data` for a matrix with `cols` columns. */
export function rowBytes(format: WeightFormat, cols: number): number {
  switch (format.kind) {
    case 'f32':
      return cols * 4;
    case 'f16':
    case 'bf16':
      return cols * 2;
    case 'int8':
      return cols;
    case 'int4':
      return Math.ceil(cols / 2);
    case 'lut':
      return Math.ceil((cols * format.bits) / 8);
  }
}

/** Number of scales per row (int formats) for a matrix with `cols` columns: the block count, or 1. */
export function scalesPerRow(format: WeightFormat, cols: number): number {
  if (format.kind !== 'int8' && format.kind !== 'int4') return 0;
  return typeof format.group === 'number' ? cols / format.group : 1;
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


/** Total scales of an int8/int4 matrix: one per block, per row ('c') or one ('t'). */
export function scaleCount(format: WeightFormat, rows: number, cols: number): number {
  if (format.kind !== 'int8' && format.kind !== 'int4') return 0;
  return format.group === 't' ? 1 : rows * scalesPerRow(format, cols);
}
