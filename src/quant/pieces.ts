// Long per-tensor work in pieces of whole rows, with the event loop let in between, so Ctrl-C is
// handled within a fraction of a second even during a large embedding (src/util/atomic-output.ts).
import { rowDecoder } from '../backend/reference/index.js';
import { matrixShape, type WeightTensor } from '../model/weight.js';
import type { RowReader } from '../io/row-reader.js';
import { yieldToEvents } from '../util/atomic-output.js';

/** Weights per piece: a fraction of a second of work for the slowest per-weight step. */
export const PIECE_WEIGHTS = 1 << 22;

/** Rows per piece for rows of `cols` weights: a multiple of `multiple`, at least one multiple. */
export function pieceRows(cols: number, multiple = 1): number {
  return Math.max(multiple, Math.floor(PIECE_WEIGHTS / cols / multiple) * multiple);
}

/** The reference backend's dequantize (same values), a piece of rows at a time. */
export async function dequantizeInPieces(w: WeightTensor): Promise<Float32Array> {
  const [rows, cols] = matrixShape(w.shape);
  const decode = rowDecoder({ ...w, shape: [rows, cols] });
  const out = new Float32Array(rows * cols);
  const step = pieceRows(cols);
  for (let r0 = 0; r0 < rows; r0 += step) {
    if (r0 > 0) await yieldToEvents();
    for (let r = r0; r < Math.min(rows, r0 + step); r++) decode(r, out.subarray(r * cols, (r + 1) * cols));
  }
  return out;
}

/** Tensors with more weights than this are converted or exported a piece of rows at a time, never held whole. */
export const STREAM_WEIGHTS = 1 << 28;

/**
 * A tensor's rows read from its file as f32, a piece at a time (`multiple` rows per piece at
 * least, a multiple of it), with the event loop let in between. The array is reused: consume each
 * piece before asking for the next. The reader is closed at the end.
 */
export async function* rowPieces(reader: RowReader, multiple = 1): AsyncIterable<{ r0: number; n: number; x: Float32Array }> {
  try {
    const { rows, cols } = reader;
    const step = pieceRows(cols, multiple);
    const buf = new Float32Array(Math.min(step, rows) * cols);
    for (let r0 = 0; r0 < rows; r0 += step) {
      if (r0 > 0) await yieldToEvents();
      const n = Math.min(step, rows - r0);
      const x = buf.subarray(0, n * cols);
      reader.read(Array.from({ length: n }, (_, i) => r0 + i), x);
      yield { r0, n, x };
    }
  } finally {
    reader.close();
  }
}
