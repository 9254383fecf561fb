// Long per-tensor work in pieces of whole rows, with the event loop let in between, so Ctrl-C is
// handled within a fraction of a second even during a large embedding (src/util/atomic-output.ts).
import { rowDecoder } from '../backend/reference/index.js';
import type { WeightTensor } from '../model/weight.js';
import { yieldToEvents } from '../util/atomic-output.js';

/** Weights per piece: a fraction of a second of work for the slowest per-weight step. */
export const PIECE_WEIGHTS = 1 << 22;

/** Rows per piece for rows of `cols` weights: a multiple of `multiple`, at least one multiple. */
export function pieceRows(cols: number, multiple = 1): number {
  return Math.max(multiple, Math.floor(PIECE_WEIGHTS / cols / multiple) * multiple);
}

/** The reference backend's dequantize (same values), a piece of rows at a time. */
export async function dequantizeInPieces(w: WeightTensor): Promise<Float32Array> {
  const [rows, cols] = w.shape.length === 1 ? [1, w.shape[0]] : w.shape;
  const decode = rowDecoder(w.shape.length === 1 ? { ...w, shape: [1, cols] } : w);
  const out = new Float32Array(rows * cols);
  const step = pieceRows(cols);
  for (let r0 = 0; r0 < rows; r0 += step) {
    if (r0 > 0) await yieldToEvents();
    for (let r = r0; r < Math.min(rows, r0 + step); r++) decode(r, out.subarray(r * cols, (r + 1) * cols));
  }
  return out;
}
