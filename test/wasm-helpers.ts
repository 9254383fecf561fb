// Shared by the wasm backend tests: seeded random weights in every format, random activations,
// and the matmul tolerance check (|Δ| ≤ 1e-5 · Σ|x·w| per output).
import assert from 'node:assert/strict';
import type { WeightFormat, WeightTensor } from '../src/model/weight.js';
import { auxCount, formatName, rowBytes } from '../src/model/formats.js';
import { f32ToBf16Bits, f32ToF16Bits } from '../src/util/half.js';

/** Seeded uniform [0, 1). */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

/** A random weight in any format, laid out as documented in src/model/weight.ts. */
export function randomWeight(format: WeightFormat, rows: number, cols: number, seed: number): WeightTensor {
  const u = rng(seed);
  const n = rows * cols;
  const base = { name: `w_${formatName(format)}_${rows}x${cols}`, shape: [rows, cols], format, source: 'test' };
  switch (format.kind) {
    case 'f32': {
      const v = Float32Array.from({ length: n }, () => u() * 2 - 1);
      return { ...base, data: new Uint8Array(v.buffer) };
    }
    case 'bf16':
    case 'f16': {
      const enc = format.kind === 'bf16' ? f32ToBf16Bits : f32ToF16Bits;
      // Mostly ordinary values; some f16 subnormals and negative zeros too.
      const v = Uint16Array.from({ length: n }, (_, i) => (i % 97 === 5 ? 0x8000 : i % 89 === 3 ? enc((u() - 0.5) * 1e-6) : enc(u() * 2 - 1)));
      return { ...base, data: new Uint8Array(v.buffer) };
    }
    case 'int8':
    case 'int4': {
      const data = new Uint8Array(rows * rowBytes(format, cols));
      for (let i = 0; i < data.length; i++) data[i] = Math.floor(u() * 256);
      if (format.kind === 'int8') for (let i = 0; i < data.length; i++) if (data[i] === 128) data[i] = 129; // codes in [-127, 127]
      const scales = Float32Array.from({ length: auxCount(format, rows, cols) }, () => (u() + 0.1) * 0.01 * (u() < 0.1 ? -1 : 1));
      return { ...base, data, scales };
    }
    case 'lut': {
      const data = new Uint8Array(rows * rowBytes(format, cols));
      for (let i = 0; i < data.length; i++) data[i] = Math.floor(u() * 256);
      const table = Float32Array.from({ length: auxCount(format, rows, cols) }, () => u() * 2 - 1);
      return { ...base, data, table };
    }
  }
}

export function fillRandom(a: Float32Array, seed: number, scale = 1): Float32Array {
  const u = rng(seed);
  for (let i = 0; i < a.length; i++) a[i] = (u() * 2 - 1) * scale;
  return a;
}

/** Assert |got − want| ≤ 1e-5 · Σ|x·w| for every output of out[T, rows] = x[T, cols] · wᵀ. */
export function checkMatmul(label: string, got: Float32Array, want: Float32Array, x: Float32Array, w: Float32Array, T: number, rows: number, cols: number) {
  let worst = 0;
  for (let t = 0; t < T; t++) {
    for (let r = 0; r < rows; r++) {
      let mag = 0;
      for (let i = 0; i < cols; i++) mag += Math.abs(x[t * cols + i] * w[r * cols + i]);
      const err = Math.abs(got[t * rows + r] - want[t * rows + r]);
      assert.ok(Number.isFinite(got[t * rows + r]), `${label}: out[${t}, ${r}] = ${got[t * rows + r]}`);
      worst = Math.max(worst, err / (mag + 1e-30));
      assert.ok(err <= 1e-5 * mag + 1e-30, `${label}: out[${t}, ${r}] ${got[t * rows + r]} vs ${want[t * rows + r]} (Σ|xw| ${mag})`);
    }
  }
  return worst;
}
