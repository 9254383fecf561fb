// Palettization lut<b>:G: each group of G consecutive output channels (rows) shares a 2^b-entry
// table found by 1-D k-means; each weight stores the b-bit index of its nearest entry.
import { LutraError } from '../util/errors.js';
import { rowBytes } from '../model/weight.js';
import { f16BitsToF32, f32ToF16Bits } from '../util/half.js';
import { distinctPoints, kmeansApprox, kmeansExact } from './kmeans1d.js';

/** Exact k-means when k·u·log2(u) stays under this many steps per group; binned-exact + Lloyd above it. */
export const EXACT_BUDGET = 5e4;

export interface LutQuantized {
  codes: Uint8Array;
  table: Float32Array;
  /** Groups solved exactly (vs binned-exact then Lloyd). */
  exactGroups: number;
}

export function quantizeLut(x: Float32Array, rows: number, cols: number, bits: number, group: number, tensor: string): LutQuantized {
  if (!Number.isInteger(bits) || bits < 1 || bits > 8) throw new LutraError(`tensor "${tensor}": lut bits must be 1..8, got ${bits}`);
  const G = group === 0 ? rows : group;
  if (G <= 0 || rows % G !== 0) {
    throw new LutraError(`tensor "${tensor}": ${rows} output channels are not divisible by the lut group size ${group}`);
  }
  const k = 1 << bits;
  const groups = rows / G;
  const table = new Float32Array(groups * k);
  const stride = rowBytes({ kind: 'lut', bits, group }, cols);
  const codes = new Uint8Array(rows * stride);
  let exactGroups = 0;
  for (let g = 0; g < groups; g++) {
    const slice = x.subarray(g * G * cols, (g + 1) * G * cols);
    const pts = distinctPoints(slice);
    const u = pts.values.length;
    let centroids: Float64Array;
    if (u <= k) {
      // Few distinct values: reproduce them exactly (pad with the last one).
      centroids = new Float64Array(k).fill(pts.values[u - 1]);
      centroids.set(pts.values);
      exactGroups++;
    } else if (k * u * Math.log2(u) <= EXACT_BUDGET) {
      centroids = kmeansExact(pts, k);
      exactGroups++;
    } else {
      centroids = kmeansApprox(pts, k, Math.max(256, 8 * k));
    }
    // Tables are stored in f16, as accelerators hold them; codes are chosen against the rounded
    // entries, so a group with ≤ 2^b distinct f16-representable values is reproduced exactly.
    const t = table.subarray(g * k, (g + 1) * k);
    for (let j = 0; j < k; j++) t[j] = f16BitsToF32(f32ToF16Bits(centroids[j]));
    // Nearest entry by binary search over the sorted (f32-rounded) table.
    for (let r = g * G; r < (g + 1) * G; r++) {
      let bit = r * stride * 8;
      for (let c = 0; c < cols; c++, bit += bits) {
        const code = nearest(t, x[r * cols + c]);
        // LSB-first bitstream; a code spans at most two bytes.
        const v = code << (bit & 7);
        codes[bit >> 3] |= v & 0xff;
        if (v > 0xff) codes[(bit >> 3) + 1] |= v >> 8;
      }
    }
  }
  return { codes, table, exactGroups };
}

function nearest(t: Float32Array, v: number): number {
  let lo = 0;
  let hi = t.length - 1;
  while (lo < hi) {
    const m = (lo + hi) >> 1;
    if (t[m] < v) lo = m + 1;
    else hi = m;
  }
  // lo is the first entry ≥ v; compare with the one below (ties go to the lower index).
  if (lo > 0 && v - t[lo - 1] <= t[lo] - v) return lo - 1;
  return lo;
}
