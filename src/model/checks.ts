// Checks a model's weights must pass before anything is computed from them: every tensor the
// config implies is there with the shape the config implies (header only, before any weight is
// read or allocated), and every value a weight holds is finite.
import type { TensorSpec } from '../arch/architecture.js';
import type { WeightSource } from './forward.js';
import type { WeightTensor } from './weight.js';
import { formatTraits } from './formats.js';
import { LutraError } from '../util/errors.js';

/**
 * Compare every expected tensor's shape with the source's header, failing on the first missing
 * tensor or mismatch with the config fields that imply it. Reads no weight.
 */
export function checkTensorShapes(manifest: readonly TensorSpec[], src: WeightSource): void {
  for (const t of manifest) {
    const where = src.where?.(t.name) ?? src.dir;
    if (!src.has(t.name)) {
      throw new LutraError(`${where}: tensor "${t.name}" is missing; config.json implies it (${t.from})`);
    }
    const shape = src.shape(t.name);
    if (shape.length !== t.shape.length || shape.some((d, i) => d !== t.shape[i])) {
      throw new LutraError(`${where}: tensor "${t.name}" has shape [${shape}], expected [${t.shape}] from config.json (${t.from})`);
    }
  }
}

/** NaN and ±Inf counts of the values a tensor holds: plain values, or quantization scales / table. */
export function countNonFinite(w: WeightTensor): { nan: number; inf: number } {
  const c = { nan: 0, inf: 0 };
  const k = w.format.kind;
  if (k === 'f32') {
    if (anyAllOnes(w.data, 0x7f800000, 0x00800000, 0x80000000)) countFloats(f32View(w.data), c);
  } else if (k === 'bf16') {
    if (anyAllOnes(w.data, 0x7f807f80, 0x00800080, 0x80008000)) countHalves(u16View(w.data), 0x7f80, 0x007f, c);
  } else if (k === 'f16') {
    if (anyAllOnes(w.data, 0x7c007c00, 0x04000400, 0x80008000)) countHalves(u16View(w.data), 0x7c00, 0x03ff, c);
  }
  if (w.scales) countFloats(w.scales, c);
  if (w.table) countFloats(w.table, c);
  return c;
}

/** Throw a one-line error naming the tensor when it holds NaN or ±Inf. */
export function assertFinite(w: WeightTensor): WeightTensor {
  const { nan, inf } = countNonFinite(w);
  if (nan + inf > 0) {
    const what = formatTraits(w.format).aux?.what ?? 'values';
    throw new LutraError(`${w.source}: tensor "${w.name}" holds ${nan} NaN and ${inf} infinite ${what}; the weights are corrupt`);
  }
  return w;
}

/**
 * Whether any value of the little-endian words has an all-ones exponent (NaN or ±Inf), branch-free
 * over 32-bit words: with the exponent bits masked out (`mask`), adding one unit of the exponent
 * (`unit`) carries into the bit above it (`carry`) exactly when every exponent bit was set. A
 * 32-bit word holds one f32 or two f16/bf16, whose carries stay in their own half.
 */
function anyAllOnes(d: Uint8Array, mask: number, unit: number, carry: number): boolean {
  const a = d.byteOffset % 4 === 0 ? d : d.slice();
  const words = new Int32Array(a.buffer, a.byteOffset, a.byteLength >> 2);
  let acc = 0;
  for (let i = 0; i < words.length; i++) acc = acc | (((words[i] & mask) + unit) | 0);
  // A 16-bit value left over when the count is odd.
  if (a.byteLength & 2) acc |= ((a[a.byteLength - 2] | (a[a.byteLength - 1] << 8)) & mask & 0xffff) + (unit & 0xffff);
  return (acc & carry) !== 0;
}

function u16View(d: Uint8Array): Uint16Array {
  const a = d.byteOffset % 2 === 0 ? d : d.slice();
  return new Uint16Array(a.buffer, a.byteOffset, a.byteLength >> 1);
}

function f32View(d: Uint8Array): Float32Array {
  const a = d.byteOffset % 4 === 0 ? d : d.slice();
  return new Float32Array(a.buffer, a.byteOffset, a.byteLength >> 2);
}

/** Exponent all ones: a mantissa of 0 is ±Inf, anything else NaN. */
function countHalves(v: Uint16Array, exp: number, man: number, c: { nan: number; inf: number }): void {
  for (let i = 0; i < v.length; i++) if ((v[i] & exp) === exp) (v[i] & man ? c.nan++ : c.inf++);
}

function countFloats(v: Float32Array, c: { nan: number; inf: number }): void {
  for (let i = 0; i < v.length; i++) {
    const x = v[i];
    if (x - x !== 0) (x !== x ? c.nan++ : c.inf++);
  }
}
