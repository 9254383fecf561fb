import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assertFinite, countNonFinite } from '../src/model/checks.js';
import type { WeightFormat, WeightTensor } from '../src/model/weight.js';
import { f32ToBf16Bits, f32ToF16Bits } from '../src/util/half.js';
import { LutraError } from '../src/util/errors.js';

/** A 1-D tensor of `values` stored in `kind`, placed at byte `offset` of its buffer (to test unaligned views). */
function tensor(kind: 'f32' | 'f16' | 'bf16', values: number[], offset = 0): WeightTensor {
  const size = kind === 'f32' ? 4 : 2;
  const buf = new Uint8Array(offset + values.length * size);
  const dv = new DataView(buf.buffer);
  values.forEach((v, i) => {
    if (kind === 'f32') dv.setFloat32(offset + 4 * i, v, true);
    else dv.setUint16(offset + 2 * i, kind === 'f16' ? f32ToF16Bits(v) : f32ToBf16Bits(v), true);
  });
  return { name: 't', shape: [values.length], format: { kind }, data: buf.subarray(offset), source: 'mem' };
}

test('countNonFinite counts NaN and ±Inf in every plain format, at any length and alignment, and only those', () => {
  for (const kind of ['f32', 'f16', 'bf16'] as const) {
    for (const n of [1, 2, 3, 7, 8, 33]) {
      for (const offset of [0, 1, 2]) {
        // Large finite values (f16's 65504, bf16's max) are not flagged.
        const big = kind === 'f16' ? 65504 : kind === 'bf16' ? 3.3e38 : 3.4e38;
        const clean = Array.from({ length: n }, (_, i) => (i % 2 ? -big : i / 7));
        assert.deepEqual(countNonFinite(tensor(kind, clean, offset)), { nan: 0, inf: 0 }, `${kind} n=${n} offset ${offset}`);
        // The last value alone (the odd half-word at the end), then NaN and Inf elsewhere.
        const last = [...clean];
        last[n - 1] = NaN;
        assert.deepEqual(countNonFinite(tensor(kind, last, offset)), { nan: 1, inf: 0 }, `${kind} n=${n} last NaN`);
        const mixed = [...clean];
        mixed[0] = -Infinity;
        if (n > 2) mixed[2] = NaN;
        assert.deepEqual(countNonFinite(tensor(kind, mixed, offset)), { nan: n > 2 ? 1 : 0, inf: 1 }, `${kind} n=${n} mixed`);
      }
    }
  }
});

test('assertFinite names the tensor and looks at quantization scales and tables', () => {
  const codes = (format: WeightFormat, extra: Partial<WeightTensor>): WeightTensor => ({ name: 'blk.w', shape: [2, 32], format, data: new Uint8Array(64), source: 'x.safetensors', ...extra });
  assert.doesNotThrow(() => assertFinite(codes({ kind: 'int8', group: 32 }, { scales: new Float32Array([1, 2]) })));
  assert.throws(() => assertFinite(codes({ kind: 'int8', group: 32 }, { scales: new Float32Array([1, Infinity]) })), (e: unknown) => e instanceof LutraError && /^x\.safetensors: tensor "blk\.w" holds 0 NaN and 1 infinite scales/.test(e.message));
  assert.throws(() => assertFinite(codes({ kind: 'lut', bits: 2, group: 0 }, { table: new Float32Array([0, NaN, NaN, 1]) })), /holds 2 NaN and 0 infinite table entries/);
  assert.throws(() => assertFinite(tensor('bf16', [1, NaN, Infinity])), /: mem: tensor "t" holds 1 NaN and 1 infinite values/);
});
