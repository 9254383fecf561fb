// Linear symmetric quantization: int8:G and int4:G (G = block of input columns, 'c' = one scale
// per output channel, 't' = one per tensor). The rules follow ggml's reference quantizers so
// int8:32 and int4:32 are value-identical to GGUF Q8_0 and Q4_0: the scale is computed in f32,
// codes use its exact inverse, and the stored scale is rounded to f16.
import { f16BitsToF32, f32ToF16Bits } from '../util/half.js';
import { LutraError } from '../util/errors.js';
import { auxCount, intBlock, rowBytes, type IntFormat } from '../model/formats.js';

const fr = Math.fround;
const f16round = (x: number) => f16BitsToF32(f32ToF16Bits(x));
/** C roundf: half away from zero. */
const roundf = (x: number) => (x < 0 ? -Math.round(-x) : Math.round(x));

export interface LinearQuantized {
  codes: Uint8Array;
  scales: Float32Array;
}

export function quantizeLinear(x: Float32Array, rows: number, cols: number, format: IntFormat, tensor: string): LinearQuantized {
  const { group } = format;
  if (typeof group === 'number' && (group <= 0 || cols % group !== 0)) {
    throw new LutraError(`tensor "${tensor}": ${cols} input columns are not a multiple of the ${format.kind} block size ${group}`);
  }
  const bs = intBlock(format, cols);
  const perRow = cols / bs;
  const scales = new Float32Array(auxCount(format, rows, cols));
  const stride = rowBytes(format, cols);
  const codes = new Uint8Array(rows * stride);
  const int8 = format.kind === 'int8';

  // Per-tensor: one scale from the whole tensor's extreme.
  let tensorD = 0;
  if (group === 't') {
    tensorD = int8 ? fr(absMax(x, 0, x.length) / 127) : fr(signedMax(x, 0, x.length) / -8);
    scales[0] = f16round(tensorD);
  }
  const c8 = new Int8Array(codes.buffer);
  for (let r = 0; r < rows; r++) {
    for (let b0 = 0; b0 < cols; b0 += bs) {
      const lo = r * cols + b0;
      const hi = lo + bs;
      let d = tensorD;
      if (group !== 't') {
        d = int8 ? fr(absMax(x, lo, hi) / 127) : fr(signedMax(x, lo, hi) / -8);
        scales[r * perRow + b0 / bs] = f16round(d);
      }
      const id = d !== 0 ? fr(1 / d) : 0;
      for (let i = lo; i < hi; i++) {
        const col = i - r * cols;
        if (int8) {
          c8[r * stride + col] = Math.max(-127, Math.min(127, roundf(fr(x[i] * id))));
        } else {
          // Q4_0: trunc(x/d + 8.5), clamped to 15 (and 0 for safety on per-tensor scales).
          const q = Math.max(0, Math.min(15, Math.trunc(fr(fr(x[i] * id) + 8.5))));
          const at = r * stride + (col >> 1);
          codes[at] |= (col & 1) === 0 ? q : q << 4;
        }
      }
    }
  }
  return { codes, scales };
}

/**
 * One scale per matrix of a stack (per expert): each `matrixRows`-row matrix quantized as with a
 * per-tensor scale, the scale stored once per row, so the result is an ordinary per-channel tensor
 * (format :c) whose scales repeat within each matrix and every kernel reads it unchanged.
 */
export function quantizeLinearPerMatrix(x: Float32Array, rows: number, cols: number, format: IntFormat, matrixRows: number, tensor: string): LinearQuantized {
  if (!Number.isInteger(matrixRows) || matrixRows <= 0 || rows % matrixRows !== 0) {
    throw new LutraError(`tensor "${tensor}": ${rows} rows are not a whole number of ${matrixRows}-row matrices`);
  }
  const perChannel: IntFormat = { kind: format.kind, group: 'c' };
  const stride = rowBytes(perChannel, cols);
  const codes = new Uint8Array(rows * stride);
  const scales = new Float32Array(rows);
  for (let r0 = 0; r0 < rows; r0 += matrixRows) {
    const q = quantizeLinear(x.subarray(r0 * cols, (r0 + matrixRows) * cols), matrixRows, cols, { kind: format.kind, group: 't' }, tensor);
    codes.set(q.codes, r0 * stride);
    scales.fill(q.scales[0], r0, r0 + matrixRows);
  }
  return { codes, scales };
}

function absMax(x: Float32Array, lo: number, hi: number): number {
  let m = 0;
  for (let i = lo; i < hi; i++) m = Math.max(m, Math.abs(x[i]));
  return m;
}

/** The value of largest magnitude, with its sign (Q4_0 maps it to −8 exactly). */
function signedMax(x: Float32Array, lo: number, hi: number): number {
  let m = 0;
  for (let i = lo; i < hi; i++) if (Math.abs(x[i]) > Math.abs(m)) m = x[i];
  return m;
}
