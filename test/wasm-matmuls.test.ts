// The wasm backend's grouped matmuls (one pool job for several matrices, inputs quantized once
// per layout) against the same matmuls one by one: awkward sizes, both kernel builds, 1 and 2
// threads, weights in several WebAssembly memories.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { WasmBackend } from '../src/backend/wasm/index.js';
import type { WasmMatrix } from '../src/backend/wasm/matrix.js';
import type { MatmulJob, Matrix } from '../src/backend/backend.js';
import type { WeightFormat } from '../src/model/weight.js';
import { formatName } from '../src/model/formats.js';
import { fillRandom, randomWeight } from './wasm-helpers.js';

const backends: WasmBackend[] = [
  new WasmBackend({ threads: 1, simd: 'baseline' }),
  new WasmBackend({ threads: 2, minParallelWork: 1, simd: 'baseline' }),
  new WasmBackend({ threads: 1, simd: 'relaxed' }),
  new WasmBackend({ threads: 2, minParallelWork: 1, simd: 'relaxed' }),
];
after(() => {
  for (const B of backends) B.dispose();
});

/** Jobs over mixed formats and token counts; several share an input, rows off multiples of 4. */
function jobSpecs(): { format: WeightFormat; rows: number; cols: number; T: number; input: number }[] {
  const specs: { format: WeightFormat; rows: number; cols: number; T: number; input: number }[] = [
    { format: { kind: 'int8', group: 32 }, rows: 37, cols: 96, T: 1, input: 0 },
    { format: { kind: 'int4', group: 32 }, rows: 21, cols: 96, T: 1, input: 0 },
    { format: { kind: 'int8', group: 32 }, rows: 6, cols: 96, T: 1, input: 0 },
    { format: { kind: 'lut', bits: 4, group: 4 }, rows: 12, cols: 96, T: 1, input: 0 },
    { format: { kind: 'f32' }, rows: 9, cols: 96, T: 1, input: 0 },
    { format: { kind: 'int8', group: 'c' }, rows: 19, cols: 77, T: 3, input: 1 },
    { format: { kind: 'int4', group: 32 }, rows: 33, cols: 128, T: 6, input: 2 },
    { format: { kind: 'int8', group: 32 }, rows: 33, cols: 128, T: 6, input: 2 },
    { format: { kind: 'lut', bits: 6, group: 1 }, rows: 7, cols: 128, T: 6, input: 2 },
    { format: { kind: 'bf16' }, rows: 5, cols: 128, T: 2, input: 3 },
  ];
  // Past MAX_JOBS (32): the list is run in several pool jobs.
  for (let i = 0; i < 30; i++) specs.push({ format: { kind: i % 2 ? 'int4' : 'int8', group: 32 }, rows: 3 + (i % 5), cols: 64, T: 1, input: 4 });
  return specs;
}

test('matmuls = the same matmuls one by one, bit for bit: shared and separate inputs, mixed formats and T, 40 jobs, weights over two memories', () => {
  const specs = jobSpecs();
  const inputCols = new Map(specs.map((s) => [s.input, [s.cols, s.T] as const]));
  const weights = specs.map((s, i) => randomWeight(s.format, s.rows, s.cols, 100 + i));
  const many = [...backends, new WasmBackend({ threads: 2, minParallelWork: 1, weightsPerMemory: 16 * 1024 })];
  try {
    for (const B of many) {
      const ms: Matrix[] = weights.map((w) => B.prepare(w));
      B.resetScratch();
      const inputs = new Map([...inputCols].map(([k, [cols, T]]) => [k, fillRandom(B.scratch(T * cols), 50 + k, 2)]));
      const jobs: MatmulJob[] = specs.map((s, i) => ({ x: inputs.get(s.input)!, T: s.T, w: ms[i], out: B.scratch(s.T * s.rows) }));
      B.matmuls(jobs);
      const label = `${B.threads} threads ${B.simd}, ${B.memories} memories`;
      jobs.forEach((j, i) => {
        const one = B.scratch(j.T * j.w.rows);
        B.matmul(j.x, j.T, j.w, one);
        assert.deepEqual(Array.from(j.out), Array.from(one), `${label}: job ${i} (${formatName(specs[i].format)}, T = ${j.T})`);
      });
      if (B.memories > 1) assert.ok(new Set(ms.map((m) => (m as WasmMatrix).mem)).size > 1, 'jobs in several memories');
    }
  } finally {
    many[many.length - 1].dispose();
  }
});
