// The wasm backend against the reference backend: every kernel on random inputs of awkward sizes,
// every weight format, 1 and 2 threads; then the whole tiny model through a Session.
//
// Tolerances. Kernels accumulate in f32 where the reference uses f64, so a dot product may differ
// by about n·2⁻²⁴ of Σ|xᵢwᵢ|: we assert |Δ| ≤ 1e-5 · Σ|xᵢwᵢ| per output (the "1e-5 relative" of
// the issue, measured against the magnitude that bounds the rounding, not against a result that
// may cancel to ~0). Attention outputs are convex combinations of values: |Δ| ≤ 1e-5 · max|v|.
// The elementwise ops follow the reference's f64 arithmetic: |Δ| ≤ 1e-6 relative.
// Whole model: max |Δlogit| ≤ 1e-3 and the same top-1 token at every position.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { f16BitsToF32, f32ArrayToF16 } from '../src/util/half.js';
import { ReferenceBackend } from '../src/backend/reference/index.js';
import { WasmBackend } from '../src/backend/wasm/index.js';
import { makeRopeTable, type Matrix } from '../src/backend/backend.js';
import type { WeightFormat } from '../src/model/weight.js';
import { formatName } from '../src/model/formats.js';
import { checkMatmul, fillRandom, randomWeight } from './wasm-helpers.js';
import { loadModel } from '../src/runtime/load.js';
import { Session } from '../src/runtime/session.js';
import { tinyFixture, maxAbsDiff, tokenSequence, argmax } from './helpers.js';

const ref = new ReferenceBackend();
const wasm1 = new WasmBackend({ threads: 1 });
// minParallelWork 1: every job is split over both threads, however small (the default keeps small ones on one).
const wasm2 = new WasmBackend({ threads: 2, minParallelWork: 1 });
const backends: [string, WasmBackend][] = [['1 thread', wasm1], ['2 threads', wasm2]];
// Attention's and the float matmuls' multiply-adds are fused in the relaxed build and not in the
// baseline one: both are checked.
const baseline2 = new WasmBackend({ threads: 2, minParallelWork: 1, simd: 'baseline' });
const attentionBackends: [string, WasmBackend][] = wasm1.simd === 'baseline' ? backends : [...backends, ['2 threads, baseline SIMD', baseline2]];
after(() => {
  wasm1.dispose();
  wasm2.dispose();
  baseline2.dispose();
});

/** Decoded weight rows through the reference (embed with scale 1 decodes any format). */
function decodedRows(m: Matrix): Float32Array {
  const out = new Float32Array(m.rows * m.cols);
  ref.embed(m, Array.from({ length: m.rows }, (_, r) => r), 1, out);
  return out;
}

// Sizes chosen so rows and columns are not multiples of 4, 8 or 32 wherever the format allows
// (numeric int groups need cols % G == 0; odd groups exercise the generic paths).
const CASES: { format: WeightFormat; rows: number; cols: number }[] = [
  { format: { kind: 'f32' }, rows: 37, cols: 53 },
  { format: { kind: 'f32' }, rows: 129, cols: 77 },
  { format: { kind: 'bf16' }, rows: 37, cols: 53 },
  { format: { kind: 'bf16' }, rows: 129, cols: 77 },
  { format: { kind: 'f16' }, rows: 37, cols: 53 },
  { format: { kind: 'f16' }, rows: 129, cols: 77 },
  { format: { kind: 'int8', group: 32 }, rows: 37, cols: 160 },
  { format: { kind: 'int8', group: 16 }, rows: 129, cols: 80 },
  { format: { kind: 'int8', group: 7 }, rows: 37, cols: 77 },
  { format: { kind: 'int8', group: 'c' }, rows: 129, cols: 77 },
  { format: { kind: 'int8', group: 't' }, rows: 37, cols: 53 },
  { format: { kind: 'int4', group: 32 }, rows: 37, cols: 96 },
  { format: { kind: 'int4', group: 16 }, rows: 129, cols: 80 },
  { format: { kind: 'int4', group: 11 }, rows: 37, cols: 77 },
  { format: { kind: 'int4', group: 'c' }, rows: 129, cols: 77 },
  { format: { kind: 'int4', group: 't' }, rows: 37, cols: 53 },
  ...[1, 2, 3, 4, 5, 6, 7, 8].flatMap((bits) => [
    { format: { kind: 'lut' as const, bits, group: 0 }, rows: 37, cols: 53 },
    { format: { kind: 'lut' as const, bits, group: 5 }, rows: 129, cols: 77 },
  ]),
];

for (const { format, rows, cols } of CASES) {
  test(`matmul ${formatName(format)} ${rows}×${cols}, T = 1, 3, 17, 1 and 2 threads`, (t) => {
    let worst = 0;
    const wt = randomWeight(format, rows, cols, rows * 1000 + cols);
    const mr = ref.prepare(wt);
    const w = decodedRows(mr);
    const float = format.kind === 'f32' || format.kind === 'bf16' || format.kind === 'f16';
    for (const [label, B] of float ? attentionBackends : backends) {
      const mw = B.prepare(wt);
      for (const T of [1, 3, 17]) {
        B.resetScratch();
        const x = fillRandom(B.scratch(T * cols), T);
        const out = B.scratch(T * rows);
        B.matmul(x, T, mw, out);
        const want = new Float32Array(T * rows);
        ref.matmul(x, T, mr, want);
        worst = Math.max(worst, checkMatmul(`${formatName(format)} T=${T} ${label}`, out, want, x, w, T, rows, cols));
        // The embedding lookup decodes rows exactly as the reference does.
        const ids = [0, rows - 1, Math.floor(rows / 2)];
        const e = B.scratch(ids.length * cols);
        B.embed(mw, ids, 1.5, e);
        const eRef = new Float32Array(ids.length * cols);
        ref.embed(mr, ids, 1.5, eRef);
        assert.equal(maxAbsDiff(e, eRef), 0, `${formatName(format)} embed ${label}`);
      }
    }
    t.diagnostic(`worst |Δ| / Σ|xw| = ${worst.toExponential(2)}`);
  });
}

test('matmul on a shape large enough to split a GEMV and a GEMM over the pool', () => {
  for (const format of [{ kind: 'bf16' } as const, { kind: 'int8', group: 32 } as const, { kind: 'int4', group: 32 } as const, { kind: 'lut', bits: 4, group: 1 } as const]) {
    const rows = 1031, cols = 320;
    const wt = randomWeight(format, rows, cols, 99);
    const mr = ref.prepare(wt);
    const w = decodedRows(mr);
    for (const [label, B] of backends) {
      const mw = B.prepare(wt);
      for (const T of [1, 5]) {
        B.resetScratch();
        const x = fillRandom(B.scratch(T * cols), 7 + T);
        const out = B.scratch(T * rows);
        B.matmul(x, T, mw, out);
        const want = new Float32Array(T * rows);
        ref.matmul(x, T, mr, want);
        checkMatmul(`${formatName(format)} ${rows}×${cols} T=${T} ${label}`, out, want, x, w, T, rows, cols);
      }
    }
  }
});

function relClose(label: string, got: Float32Array, want: Float32Array, rel: number) {
  for (let i = 0; i < want.length; i++) {
    const tol = rel * Math.max(Math.abs(want[i]), 1e-30);
    assert.ok(Math.abs(got[i] - want[i]) <= tol, `${label}[${i}]: ${got[i]} vs ${want[i]}`);
  }
}

test('rmsNorm, rope, geluMul, softcap and add match the reference', () => {
  for (const [label, B] of backends) {
    B.resetScratch();
    // rmsNorm over 3 rows of 53, in place and out of place.
    const x = fillRandom(B.scratch(3 * 53), 1, 3);
    const gain = fillRandom(B.alloc(53), 2);
    const out = B.scratch(3 * 53);
    const want = new Float32Array(3 * 53);
    ref.rmsNorm(x, 3, 53, gain, 1e-6, want);
    B.rmsNorm(x, 3, 53, gain, 1e-6, out);
    relClose(`rmsNorm ${label}`, out, want, 1e-6);
    B.rmsNorm(x, 3, 53, gain, 1e-6, x);
    relClose(`rmsNorm in place ${label}`, x, want, 1e-6);

    // RoPE on [T=3, heads=3, headDim=18] from position 40.
    const table = makeRopeTable(10000, 18, 1);
    const r = fillRandom(B.scratch(3 * 3 * 18), 3);
    const rWant = r.slice();
    ref.rope(rWant, 3, 3, 18, 40, table);
    B.rope(r, 3, 3, 18, 40, table);
    relClose(`rope ${label}`, r, rWant, 1e-6);

    // geluMul: small (calling thread) and large (pool), out aliasing gate.
    for (const n of [1001, 9001]) {
      const gate = fillRandom(B.scratch(n), 4, 4);
      const up = fillRandom(B.scratch(n), 5);
      const g = new Float32Array(n);
      ref.geluMul(gate, up, n, g);
      B.geluMul(gate, up, n, gate);
      // f32 arithmetic in the kernel: z = −2u carries a few roundings, ≤ 1.3e-6 relative in e^z
      // (and the result) for x in [−4, −1], measured on a dense sweep.
      relClose(`geluMul ${n} ${label}`, gate, g, 3e-6);
    }

    // softcap: small (calling thread) and large (pool), against the reference's Math.tanh loop;
    // magnitudes from 1e-9 (the series branch) through ±cap to far beyond it (tanh → ±1).
    for (const n of [1001, 9001]) {
      const x = fillRandom(B.scratch(n), 8);
      for (let i = 0; i < n; i++) x[i] *= 10 ** ((i % 23) - 9) * 3;
      x[0] = 0;
      const want = Float32Array.from(x, (v) => 30 * Math.tanh(v / 30));
      B.softcap!(x, n, 30);
      relClose(`softcap ${n} ${label}`, x, want, 1e-6);
      let same = 0;
      for (let i = 0; i < n; i++) if (x[i] === want[i]) same++;
      assert.ok(same >= 0.99 * n, `softcap ${n} ${label}: only ${same} of ${n} bit-identical to the reference`);
    }

    const acc = fillRandom(B.scratch(77), 6);
    const add = fillRandom(B.scratch(77), 7);
    const accWant = acc.slice();
    ref.add(accWant, add, 77);
    B.add(acc, add, 77);
    assert.equal(maxAbsDiff(acc, accWant), 0, `add ${label}`);
  }
});

test('attention: batch keys vs cached keys, ring slots, sliding and global, T = 1, 3, 17, 2 or 1 kv heads', () => {
  // One kv head: a 2-thread decode step splits the four query heads over two units. Head dims 18
  // (tails everywhere) and 32 (the two-heads × sixteen-dims value tiles); groups of 4, 2 (two-head
  // score tiles) and 3 (one head at a time).
  for (const numKvHeads of [2, 1]) attentionCases(4, numKvHeads, 18, 'f32');
  attentionCases(4, 1, 32, 'f32');
  attentionCases(3, 1, 32, 'f32');
});

test('attention over an f16 KV cache: wasm widens the cached halves as the reference does', () => {
  attentionCases(4, 1, 32, 'f16');
  attentionCases(4, 2, 18, 'f16');
  attentionCases(3, 1, 18, 'f16');
});

test('attention over an f16 KV cache: every finite half reaches the output exactly', () => {
  // One cached key (position 0) scores 100 and the batch's own key −100: its weight (e^−200) is 0 and
  // the output is the cached value row itself, widened from halves. The row holds all 63 488 finite halves.
  const halves: number[] = [];
  for (let h = 0; h < 0x10000; h++) if ((h & 0x7c00) !== 0x7c00) halves.push(h);
  const D = halves.length; // 63 488 = 16 · 3 968
  for (const numHeads of [1, 2]) {
    for (const [label, B] of attentionBackends) {
      B.resetScratch();
      const cacheK = B.alloc(D / 2), cacheV = B.alloc(D / 2);
      new Uint16Array(cacheK.buffer, cacheK.byteOffset, D)[0] = 0x3c00; // 1.0
      new Uint16Array(cacheV.buffer, cacheV.byteOffset, D).set(halves);
      const q = B.scratch(numHeads * D).fill(0), k = B.scratch(D).fill(0), v = B.scratch(D).fill(0);
      for (let h = 0; h < numHeads; h++) q[h * D] = 100;
      k[0] = -1;
      const out = B.scratch(numHeads * D);
      const cache = { k: cacheK, v: cacheV, capacity: 1, ring: false, type: 'f16' as const };
      B.attention({ q, k, v, cache, pos0: 1, T: 1, numHeads, numKvHeads: 1, headDim: D, scale: 1, window: 0, qChunk: 1, out });
      for (let h = 0; h < numHeads; h++) {
        for (let i = 0; i < D; i++) {
          if (out[h * D + i] !== f16BitsToF32(halves[i])) assert.fail(`${label}, ${numHeads} head(s): half 0x${halves[i].toString(16)} came out as ${out[h * D + i]}, expected ${f16BitsToF32(halves[i])}`);
        }
      }
      B.free(cacheK);
      B.free(cacheV);
    }
  }
});

function attentionCases(numHeads: number, numKvHeads: number, headDim: number, type: 'f32' | 'f16') {
  const kvDim = numKvHeads * headDim;
  const cases = [
    { window: 16, capacity: 16, ring: true, pos0: 37 }, // ring wrapped twice
    { window: 16, capacity: 16, ring: true, pos0: 5 },
    { window: 0, capacity: 64, ring: false, pos0: 20 },
    { window: 0, capacity: 64, ring: false, pos0: 0 },
    // Enough keys for a 2-thread decode step to split them in two runs (attentionCombine merges).
    { window: 0, capacity: 200, ring: false, pos0: 150 },
    { window: 100, capacity: 100, ring: true, pos0: 230 },
  ];
  for (const c of cases) {
    for (const T of [1, 3, 17]) {
      for (const [label, B] of attentionBackends) {
        B.resetScratch();
        const q = fillRandom(B.scratch(T * numHeads * headDim), 11 + T, 2);
        const k = fillRandom(B.scratch(T * kvDim), 12 + T, 2);
        const v = fillRandom(B.scratch(T * kvDim), 13 + T);
        const cacheArray = (seed: number) => {
          const values = fillRandom(new Float32Array(c.capacity * kvDim), seed);
          if (type === 'f32') {
            const a = B.alloc(values.length);
            a.set(values);
            return a;
          }
          const a = B.alloc(Math.ceil(values.length / 2));
          new Uint16Array(a.buffer, a.byteOffset, values.length).set(f32ArrayToF16(values));
          return a;
        };
        const cache = { k: cacheArray(14), v: cacheArray(15), capacity: c.capacity, ring: c.ring, type };
        const args = { q, k, v, cache, pos0: c.pos0, T, numHeads, numKvHeads, headDim, scale: 1 / Math.sqrt(headDim), window: c.window, qChunk: 4 };
        const out = B.scratch(T * numHeads * headDim);
        B.attention({ ...args, out });
        const want = new Float32Array(T * numHeads * headDim);
        ref.attention({ ...args, out: want });
        let vmax = 0;
        for (const x of v) vmax = Math.max(vmax, Math.abs(x));
        vmax = Math.max(vmax, 1); // cached values are in [-1, 1]
        const d = maxAbsDiff(out, want);
        assert.ok(d <= 1e-5 * vmax, `attention ${JSON.stringify(c)} T=${T} ${numHeads}/${numKvHeads} heads, dim ${headDim}, ${type} cache, ${label}: max |Δ| ${d}`);
        B.free(cache.k);
        B.free(cache.v);
      }
    }
  }
}

test('arrays outside the backend memory are a clear error', () => {
  const m = wasm1.prepare(randomWeight({ kind: 'f32' }, 5, 7, 1));
  wasm1.resetScratch();
  assert.throws(() => wasm1.matmul(new Float32Array(7), 1, m, wasm1.scratch(5)), /matmul input for w_f32_5x7 is not in the backend's memory/);
  assert.throws(() => wasm1.matmul(wasm1.scratch(3), 1, m, wasm1.scratch(5)), /has 3 elements, needs 7/);
  assert.throws(() => wasm1.embed(m, [5], 1, wasm1.scratch(7)), /token id 5 is outside the embedding table/);
});

test('whole tiny model: prefill and decode past the sliding window match the reference (1 and 2 threads)', async (t) => {
  const fx = await tinyFixture();
  try {
    const refModel = loadModel(fx.dir, ref, { tokenizer: false }).model;
    const V = refModel.vocabSize;
    const W = refModel.cfg.slidingWindow;
    const ids = tokenSequence(Math.round(3.5 * W) + 3, 7);
    const head = ids.length - 6;
    // Reference: prefill in batches smaller than the window, then decode the rest one by one.
    const refSession = new Session(refModel, { contextLength: 256, prefillBatch: 5, qChunk: 3 });
    const want = new Float32Array(ids.length * V);
    want.set(refSession.prefill(ids.slice(0, head), { all: true }));
    for (let i = head; i < ids.length; i++) want.set(refSession.step(ids[i]), i * V);

    for (const threads of [1, 2]) {
      const B = new WasmBackend({ threads, minParallelWork: 1 });
      try {
        const model = loadModel(fx.dir, B, { tokenizer: false }).model;
        const runs: [string, Float32Array][] = [];
        // Same schedule as the reference.
        const s = new Session(model, { contextLength: 256, prefillBatch: 5, qChunk: 3 });
        const a = new Float32Array(ids.length * V);
        a.set(s.prefill(ids.slice(0, head), { all: true }));
        for (let i = head; i < ids.length; i++) a.set(s.step(ids[i]), i * V);
        runs.push(['batches of 5 then decode', a]);
        // One batch longer than the window; then token by token through the rings.
        runs.push(['one batch', new Session(model, { contextLength: 256, prefillBatch: 64, qChunk: 16 }).prefill(ids, { all: true })]);
        const d = new Session(model, { contextLength: 256 });
        const b = new Float32Array(ids.length * V);
        for (let i = 0; i < ids.length; i++) b.set(d.step(ids[i]), i * V);
        runs.push(['decode only', b]);
        for (const [what, got] of runs) {
          const diff = maxAbsDiff(got, want);
          t.diagnostic(`${threads} threads, ${what}: max |Δlogit| ${diff.toExponential(2)}`);
          assert.ok(diff <= 1e-3, `${threads} threads, ${what}: max |Δlogit| ${diff}`);
          for (let i = 0; i < ids.length; i++) {
            assert.equal(argmax(got.subarray(i * V, (i + 1) * V)), argmax(want.subarray(i * V, (i + 1) * V)), `${threads} threads, ${what}: top-1 at position ${i}`);
          }
        }
      } finally {
        B.dispose();
      }
    }
  } finally {
    fx.cleanup();
  }
});


test('f16 weights: subnormals, ±0 and ±65504 take the 4-op conversion exactly; a matrix with Inf/NaN keeps the exact path', () => {
  const rows = 13;
  const cols = 37;
  const special = [0x0000, 0x8000, 0x0001, 0x83ff, 0x0400, 0x7bff, 0xfbff, 0x3c00, 0xbc00, 0x3555];
  const make = (withInf: boolean) => {
    const h = new Uint16Array(rows * cols);
    for (let i = 0; i < h.length; i++) h[i] = special[(i * 7) % special.length];
    if (withInf) h[5 * cols + 3] = 0x7c00;
    return { name: withInf ? 'f16-inf' : 'f16-special', shape: [rows, cols], format: { kind: 'f16' as const }, data: new Uint8Array(h.buffer), source: 'test' };
  };
  for (const withInf of [false, true]) {
    const wt = make(withInf);
    for (const [label, B] of backends) {
      for (const T of [1, 3]) {
        const x = fillRandom(B.alloc(T * cols), 5 + T, 1e-3);
        const got = B.alloc(T * rows);
        B.matmul(x, T, B.prepare(wt), got);
        const want = new Float32Array(T * rows);
        ref.matmul(Float32Array.from(x), T, ref.prepare(wt), want);
        for (let i = 0; i < want.length; i++) {
          const ok = Number.isFinite(want[i]) ? Math.abs(got[i] - want[i]) <= 1e-5 * Math.abs(want[i]) + 1e-6 : Object.is(got[i], want[i]) || (Number.isNaN(got[i]) && Number.isNaN(want[i]));
          assert.ok(ok, `${wt.name} ${label} T=${T}: out[${i}] ${got[i]} vs ${want[i]}`);
        }
        if (withInf) assert.ok(want.some((v) => !Number.isFinite(v)), 'the Inf weight reaches the output');
      }
    }
  }
});

test('f16 weights: every finite half converts exactly on the fast path (row decode and GEMV with one-hot inputs)', () => {
  const rows = 256;
  const cols = 248; // 63 488 = every finite f16 pattern (exponent < 31, both signs)
  const h = new Uint16Array(rows * cols);
  let k = 0;
  for (let b = 0; b < 0x10000; b++) if ((b & 0x7c00) !== 0x7c00) h[k++] = b;
  assert.equal(k, rows * cols);
  const wt = { name: 'all-halves', shape: [rows, cols], format: { kind: 'f16' as const }, data: new Uint8Array(h.buffer), source: 'test' };
  const B = backends[0][1];
  const v = B.vector({ ...wt, shape: [rows * cols] });
  for (let i = 0; i < k; i++) assert.ok(Object.is(v[i], f16BitsToF32(h[i])), `pattern 0x${h[i].toString(16)}: ${v[i]}`);
  const m = B.prepare(wt);
  const x = B.alloc(cols);
  const out = B.alloc(rows);
  for (const c of [0, 1, 5, 77, 247]) {
    x.fill(0);
    x[c] = 1;
    B.matmul(x, 1, m, out);
    // === (not Object.is): the sum starts at +0, so a −0 weight gives +0.
    for (let r = 0; r < rows; r++) assert.ok(out[r] === f16BitsToF32(h[r * cols + c]), `row ${r}, column ${c}: ${out[r]}`);
  }
});

test('firstNonFinite: the first NaN / ±Inf of awkward lengths, in the vector part and the tail, or −1', () => {
  for (const n of [0, 1, 15, 16, 17, 63, 64, 301]) {
    wasm1.resetScratch();
    const x = fillRandom(wasm1.scratch(n), n + 3, 1e30);
    assert.equal(wasm1.firstNonFinite(x, n), -1, `n = ${n}, all finite (values up to 1e30)`);
    for (const at of [0, 5, n - 17, n - 1].filter((i) => i >= 0 && i < n)) {
      for (const bad of [NaN, Infinity, -Infinity]) {
        fillRandom(x, at, 3);
        x[at] = bad;
        if (at + 3 < n) x[at + 3] = NaN; // a later one does not count
        assert.equal(wasm1.firstNonFinite(x, n), at, `n = ${n}: ${bad} at ${at}`);
        assert.equal(wasm1.firstNonFinite(x, at), -1, `n = ${at}: stops before it`);
      }
    }
  }
});

test('softcap: cap·tanh(x/cap) in f64, one f32 rounding, on awkward lengths, 1 and 2 threads (the series near 0, the clamp far out)', () => {
  for (const B of [wasm1, wasm2]) {
    for (const [n, cap] of [[1, 30], [7, 30], [301, 50], [4096 + 13, 30], [20011, 15.5]] as const) {
      B.resetScratch();
      const x = fillRandom(B.scratch(n), n, 100);
      // Near zero (the series branch), exact zeros of both signs, and far past the clamp.
      for (let i = 0; i < n; i += 5) x[i] *= 1e-4;
      for (let i = 3; i < n; i += 97) x[i] = i % 2 ? 0 : -0;
      for (let i = 11; i < n; i += 89) x[i] = (i % 2 ? 1 : -1) * 1e6;
      const want = Float32Array.from(x, (v) => cap * Math.tanh(v / cap));
      B.softcap(x, n, cap);
      let exact = 0;
      for (let i = 0; i < n; i++) {
        // The kernel's tanh is accurate to ~1e-11: its f32 result is the reference's or one ulp off.
        const tol = Math.abs(want[i]) * 2 ** -23;
        assert.ok(Math.abs(x[i] - want[i]) <= tol, `${B.threads} threads, n = ${n}: [${i}] ${x[i]} vs ${want[i]}`);
        if (Object.is(x[i], want[i])) exact++;
      }
      assert.ok(exact >= n - Math.max(1, n / 1000), `${B.threads} threads, n = ${n}: ${n - exact} results one ulp off`);
    }
  }
});
