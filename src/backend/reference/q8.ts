// q8 activations, the oracle's copy of kernels/q8.ts: per block of 32 inputs d = amax/127,
// code = nearest(x · (1/d)) with ties to even, clamped to ±127, every step rounded to f32 exactly
// as the wasm kernel does (f32 ÷ and × computed in f64 then rounded are correctly rounded).
import type { WeightFormat } from '../../model/weight.js';
import { formatTraits } from '../../model/formats.js';
import { LutraError } from '../../util/errors.js';

export type Activations = 'q8' | 'f32';

/** int8/int4 with scale blocks that hold whole activation blocks of 32 (or one scale per row): formats.ts says which. */
export function usesQ8(f: WeightFormat): boolean {
  return formatTraits(f).q8?.(f) ?? false;
}

export function checkActivations(a: unknown): Activations {
  if (a === undefined) return 'q8';
  if (a !== 'q8' && a !== 'f32') throw new LutraError(`activations must be 'q8' or 'f32', got ${String(a)}`);
  return a;
}

function roundEven(v: number): number {
  const r = Math.round(v); // ties toward +∞
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Quantize x[off .. off + n) into codes (Int32Array n) and scales (Float64Array ceil(n/32)). */
export function quantizeQ8(x: Float32Array, off: number, n: number, codes: Int32Array, scales: Float64Array): void {
  for (let b0 = 0; b0 < n; b0 += 32) {
    const end = Math.min(n, b0 + 32);
    let amax = 0;
    for (let i = b0; i < end; i++) amax = Math.max(amax, Math.abs(x[off + i]));
    const d = Math.fround(amax / 127);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    scales[b0 >> 5] = d;
    for (let i = b0; i < end; i++) codes[i] = Math.max(-127, Math.min(127, roundEven(Math.fround(x[off + i] * id))));
  }
}

/**
 * A LUT weight under q8 activations: each table rounded to integers with one scale per table
 * (s = amax/L in f32, code = nearest(t / s), ties to even; L = lutQ8Max(bits)), so its matmuls are
 * integer dot products like int8's. `rounded` holds the values those stand for, f32(s · code),
 * which every other use of the matrix (row decode, embedding lookups) reads, so a model sees one
 * set of weights.
 */
export interface LutQ8Tables {
  codes: Int8Array;
  scales: Float32Array;
  rounded: Float32Array;
}

/**
 * The largest code of a rounded LUT table: 63 (7 bits) for lut1..4, whose tables the relaxed
 * build's kernels bias by 64 into the unsigned 7-bit operand of the i8 × i7 dot product (as int4's
 * nibbles are); 127 for lut5..8.
 */
export function lutQ8Max(bits: number): number {
  return bits <= 4 ? 63 : 127;
}

export function lutQ8Tables(table: Float32Array, bits: number): LutQ8Tables {
  const n = 1 << bits;
  const max = lutQ8Max(bits);
  const units = table.length / n;
  const codes = new Int8Array(table.length);
  const scales = new Float32Array(units);
  const rounded = new Float32Array(table.length);
  for (let u = 0; u < units; u++) {
    let amax = 0;
    for (let k = 0; k < n; k++) amax = Math.max(amax, Math.abs(table[u * n + k]));
    const s = Math.fround(amax / max);
    scales[u] = s;
    for (let k = 0; k < n; k++) {
      const c = s === 0 ? 0 : Math.max(-max, Math.min(max, roundEven(table[u * n + k] / s)));
      codes[u * n + k] = c;
      rounded[u * n + k] = Math.fround(s * codes[u * n + k]); // the stored code: no −0
    }
  }
  return { codes, scales, rounded };
}
