// q8 activations (int8/int4/lut weights): the wasm kernels against the reference backend running
// the same activation quantization, the exact rounding rule, LUT tables rounded to integers, the f32
// switch, and the whole tiny model converted to int8:32, int4:32 and LUT formats.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ReferenceBackend } from '../src/backend/reference/index.js';
import { WasmBackend } from '../src/backend/wasm/index.js';
import type { WasmMatrix } from '../src/backend/wasm/matrix.js';
import type { Backend, Matrix } from '../src/backend/backend.js';
import type { WeightFormat, WeightTensor } from '../src/model/weight.js';
import { formatName } from '../src/model/formats.js';
import { convert } from '../src/quant/convert.js';
import { buildPlan } from '../src/quant/plan.js';
import { loadModel, makeBackend } from '../src/runtime/load.js';
import { Session } from '../src/runtime/session.js';
import { lutQ8Tables, quantizeQ8 } from '../src/backend/reference/q8.js';
import { checkMatmul, fillRandom, randomWeight } from './wasm-helpers.js';
import { tinyFixture, maxAbsDiff, tokenSequence, argmax } from './helpers.js';

const ref = new ReferenceBackend();
const refF32 = new ReferenceBackend({ activations: 'f32' });
const wasm1 = new WasmBackend({ threads: 1, simd: 'baseline' });
// minParallelWork 1: every job is split over both threads, however small (the default keeps small ones on one).
const wasm2 = new WasmBackend({ threads: 2, minParallelWork: 1, simd: 'baseline' });
const wasmF32 = new WasmBackend({ threads: 2, activations: 'f32', minParallelWork: 1 });
// The relaxed-SIMD build (int4 against i8 codes, kernels/q4-relaxed.ts), where the engine has it.
const relaxed = relaxedBackends();
const wasmAll: WasmBackend[] = [wasm1, wasm2, ...relaxed];
// lut1..3 and lut5..7 kept packed (their own kernels, kernels/lut-q8.ts) instead of repacked to
// lut4 and int8 rows.
const packed: WasmBackend[] = [
  new WasmBackend({ threads: 1, simd: 'baseline', repack: false }),
  new WasmBackend({ threads: 2, minParallelWork: 1, simd: 'baseline', repack: false }),
  ...relaxedBackends({ repack: false }),
];
after(() => {
  for (const B of [...wasmAll, ...packed, wasmF32]) B.dispose();
});

function relaxedBackends(o: { repack?: boolean } = {}): WasmBackend[] {
  try {
    return [new WasmBackend({ threads: 1, simd: 'relaxed', ...o }), new WasmBackend({ threads: 2, minParallelWork: 1, simd: 'relaxed', ...o })];
  } catch (e) {
    if (!/no WebAssembly relaxed SIMD/.test(String(e))) throw e;
    return [];
  }
}

test('the relaxed-SIMD kernels build loads on this engine (Node 20 behind a V8 flag lutra sets, Node 22+ by default)', () => {
  assert.equal(relaxed.length, 2, 'relaxed SIMD unavailable: only the baseline kernels are tested');
  assert.deepEqual(relaxed.map((B) => B.simd), ['relaxed', 'relaxed']);
  assert.equal(wasm1.simd, 'baseline');
  assert.throws(() => new WasmBackend({ threads: 1, simd: 'avx' as 'auto' }), /unknown SIMD level "avx": expected auto, relaxed, baseline/);
});

function decoded(w: WeightTensor): Float32Array {
  const m = refF32.prepare(w);
  const out = new Float32Array(m.rows * m.cols);
  refF32.embed(m, Array.from({ length: m.rows }, (_, r) => r), 1, out);
  return out;
}

// Rows and columns off multiples of 4, 8 and 32 wherever the group allows; groups of 32, 64, 128,
// per-channel and per-tensor (which take the q8 path), T = 1 (GEMV) and 2, 7, 9 (GEMM tiles + tails).
const Q8_CASES: { format: WeightFormat; rows: number; cols: number }[] = [
  { format: { kind: 'int8', group: 32 }, rows: 37, cols: 160 },
  { format: { kind: 'int8', group: 64 }, rows: 23, cols: 192 },
  { format: { kind: 'int8', group: 'c' }, rows: 129, cols: 77 },
  { format: { kind: 'int8', group: 't' }, rows: 37, cols: 53 },
  { format: { kind: 'int4', group: 32 }, rows: 37, cols: 96 },
  { format: { kind: 'int4', group: 128 }, rows: 21, cols: 256 },
  { format: { kind: 'int4', group: 'c' }, rows: 129, cols: 77 },
  { format: { kind: 'int4', group: 't' }, rows: 37, cols: 53 },
  // The relaxed int4 and int8 GEMV kernels take blocks four at a time: runs of 4 plus 1–3 left
  // over, a scale per block, per two blocks, per row (with a partial last block) and per tensor.
  { format: { kind: 'int4', group: 32 }, rows: 37, cols: 224 },
  { format: { kind: 'int8', group: 32 }, rows: 19, cols: 288 },
  { format: { kind: 'int8', group: 'c' }, rows: 19, cols: 301 },
  { format: { kind: 'int4', group: 64 }, rows: 23, cols: 320 },
  { format: { kind: 'int4', group: 'c' }, rows: 19, cols: 301 },
  { format: { kind: 'int4', group: 't' }, rows: 21, cols: 270 },
];

for (const { format, rows, cols } of Q8_CASES) {
  test(`q8 matmul ${formatName(format)} ${rows}×${cols}: wasm = reference (q8), near f32, T = 1, 2, 3, 4, 5, 9`, () => {
    const wt = randomWeight(format, rows, cols, rows * 7 + cols);
    const w = decoded(wt);
    const mr = ref.prepare(wt);
    const mf = refF32.prepare(wt);
    let quantized = 0;
    for (const B of wasmAll) {
      const mw = B.prepare(wt) as WasmMatrix;
      assert.equal(mw.q8, true, 'takes the q8 path');
      for (const T of [1, 2, 3, 4, 5, 9]) {
        B.resetScratch();
        const x = fillRandom(B.scratch(T * cols), 31 + T, 3);
        const out = B.scratch(T * rows);
        B.matmul(x, T, mw, out);
        const want = new Float32Array(T * rows);
        ref.matmul(x, T, mr, want);
        checkMatmul(`${formatName(format)} T=${T} ${B.threads} threads ${B.simd}`, out, want, x, w, T, rows, cols);
        // Against f32 activations the error is bounded by rounding each input by ≤ d/2 of its block.
        const exact = new Float32Array(T * rows);
        refF32.matmul(x, T, mf, exact);
        for (let t = 0; t < T; t++) {
          const half = blockScales(x.subarray(t * cols, (t + 1) * cols)).map((d) => d / 2);
          for (let r = 0; r < rows; r++) {
            let bound = 1e-9;
            for (let i = 0; i < cols; i++) bound += Math.abs(w[r * cols + i]) * half[i >> 5] * 1.0001;
            const e = Math.abs(out[t * rows + r] - exact[t * rows + r]);
            assert.ok(e <= bound, `${formatName(format)} T=${T}: q8 error ${e} > bound ${bound}`);
            quantized = Math.max(quantized, e / bound);
          }
        }
      }
    }
    assert.ok(quantized > 0.01, `q8 results should differ from f32 activations (max error/bound ${quantized})`);
  });
}

// LUT weights under q8 activations: each table rounded to integers with one scale (lutQ8Tables), the
// kernels of kernels/lut-q8.ts (lut4, and lut1..3 and lut5..7 with repack off); by default lut1..3
// repacked to lut4 rows and run by its kernels, lut5..7 (and always lut8) to int8 rows run by the
// int8 kernels. Columns with several full blocks
// of 32 and a partial one; groups per tensor, per row, per 4 or 5 rows.
const LUT_CASES: { format: WeightFormat; rows: number; cols: number }[] = [1, 2, 3, 4, 5, 6, 7, 8].flatMap((bits) => [
  { format: { kind: 'lut' as const, bits, group: 0 }, rows: 37, cols: 301 },
  { format: { kind: 'lut' as const, bits, group: bits % 2 ? 5 : 4 }, rows: bits % 2 ? 45 : 36, cols: 160 },
  { format: { kind: 'lut' as const, bits, group: 1 }, rows: 19, cols: 77 },
  // Past 1024 rows: prepare() repacks in slices of 1024 rows, whose tables must follow on.
  ...(bits !== 4 ? [{ format: { kind: 'lut' as const, bits, group: 5 }, rows: 1035, cols: 40 }] : []),
]);

for (const { format, rows, cols } of LUT_CASES) {
  test(`q8 matmul ${formatName(format)} ${rows}×${cols}: wasm = reference, tables rounded to integers, T = 1, 2, 3, 4, 5, 9`, () => {
    const wt = randomWeight(format, rows, cols, rows * 13 + cols);
    const exact = decoded(wt); // the stored table
    const mr = ref.prepare(wt);
    const w = new Float32Array(rows * cols); // the rounded table, as the reference decodes it under q8
    ref.embed(mr, Array.from({ length: rows }, (_, r) => r), 1, w);
    // Rounding: one scale per table, every value within half a step of the stored one.
    const t = lutQ8Tables(wt.table!, format.kind === 'lut' ? format.bits : 0);
    const step = (r: number) => t.scales[format.kind === 'lut' && format.group ? Math.floor(r / format.group) : 0];
    for (let r = 0; r < rows; r++) for (let i = 0; i < cols; i++) assert.ok(Math.abs(w[r * cols + i] - exact[r * cols + i]) <= step(r) / 2 + 1e-9);
    assert.ok(maxAbsDiff(w, exact) > 0, 'the rounded tables differ from the stored ones');
    const mf = refF32.prepare(wt);
    const bits = format.kind === 'lut' ? format.bits : 0;
    for (const B of [...wasmAll, ...(bits <= 7 && bits !== 4 ? packed : [])]) {
      const mw = B.prepare(wt) as WasmMatrix;
      assert.equal(mw.q8, true, 'takes the q8 path');
      // Repacked lut5..8: a byte a weight and a scale per row; repacked lut1..3: lut4 rows, tables of
      // 16 entries; packed: the codes; both with each table as f32 and int8, and a scale per row.
      const asInt8 = bits === 8 || (bits >= 5 && B.repack);
      const asLut4 = bits <= 3 && B.repack;
      const held = asInt8 ? 'int8:c' : asLut4 ? `lut4:${format.kind === 'lut' ? format.group : 0}` : formatName(format);
      assert.equal(formatName(B.heldFormat(format)), held);
      const tables = format.kind === 'lut' ? (format.group ? rows / format.group : 1) : 0;
      const want = asInt8 ? rows * cols + 4 * rows : asLut4 ? rows * Math.ceil(cols / 2) + 5 * 16 * tables + 4 * rows : wt.data.byteLength + 5 * (tables << bits) + 4 * rows;
      assert.equal(mw.bytes, want, `${formatName(format)} bytes held, repack ${B.repack}`);
      const ids = [0, rows - 1, rows >> 1];
      B.resetScratch();
      const e = B.scratch(ids.length * cols), eRef = new Float32Array(ids.length * cols);
      B.embed(mw, ids, 1.5, e);
      ref.embed(mr, ids, 1.5, eRef);
      assert.equal(maxAbsDiff(e, eRef), 0, `${formatName(format)} embed ${B.threads} threads ${B.simd}`);
      for (const T of [1, 2, 3, 4, 5, 9]) {
        B.resetScratch();
        const x = fillRandom(B.scratch(T * cols), 3 + T, 2);
        const out = B.scratch(T * rows);
        B.matmul(x, T, mw, out);
        const want = new Float32Array(T * rows);
        ref.matmul(x, T, mr, want);
        checkMatmul(`${formatName(format)} T=${T} ${B.threads} threads ${B.simd}`, out, want, x, w, T, rows, cols);
        // Against the stored table and f32 activations: each weight off by ≤ s/2, each input by ≤ d/2.
        const f32 = new Float32Array(T * rows);
        refF32.matmul(x, T, mf, f32);
        for (let tk = 0; tk < T; tk++) {
          const half = blockScales(x.subarray(tk * cols, (tk + 1) * cols)).map((d) => d / 2);
          for (let r = 0; r < rows; r++) {
            let bound = 1e-9;
            for (let i = 0; i < cols; i++) bound += (Math.abs(x[tk * cols + i]) * step(r)) / 2 + (Math.abs(w[r * cols + i]) + step(r) / 2) * half[i >> 5];
            const err = Math.abs(out[tk * rows + r] - f32[tk * rows + r]);
            assert.ok(err <= bound * 1.0001, `${formatName(format)} T=${T}: error against f32 ${err} > bound ${bound}`);
          }
        }
      }
    }
  });
}

test('lutQ8Tables: one scale per table (amax/63 up to 4 bits, amax/127 above), codes rounded half to even, all-zero tables', () => {
  const t = lutQ8Tables(new Float32Array([63, 2.5, 3.5, -0.5, 0, 0, 0, 0, -126, 1, 0.5, 0.25]), 2);
  assert.deepEqual(Array.from(t.scales), [1, 0, 2]);
  assert.deepEqual(Array.from(t.codes), [63, 2, 4, 0, 0, 0, 0, 0, -63, 0, 0, 0]);
  assert.deepEqual(Array.from(t.rounded), [63, 2, 4, 0, 0, 0, 0, 0, -126, 0, 0, 0]);
  const wide = new Float32Array(64);
  wide.set([127, 2.5, 3.5, -0.5]);
  wide.set([-2.54, 1, 0.5, 0.0099], 32);
  const u = lutQ8Tables(wide, 5);
  assert.deepEqual(Array.from(u.scales), [1, Math.fround(0.02)]);
  assert.deepEqual(Array.from(u.codes.slice(0, 4)), [127, 2, 4, 0]);
  assert.deepEqual(Array.from(u.codes.slice(32, 36)), [-127, 50, 25, 0]);
  assert.deepEqual(Array.from(u.rounded.slice(32, 36)), [Math.fround(-127 * Math.fround(0.02)), Math.fround(50 * Math.fround(0.02)), Math.fround(25 * Math.fround(0.02)), 0]);
});

function blockScales(x: Float32Array): number[] {
  const d: number[] = [];
  for (let b = 0; b < x.length; b += 32) d.push(Math.fround(Math.max(...Array.from(x.subarray(b, b + 32), Math.abs)) / 127));
  return d;
}

test('q8 rounding: ties to even, clamp, zero blocks, split layout for int4 (identity weights)', () => {
  const n = 40; // one full block and a partial one
  const x = new Float32Array(n);
  x.set([127, 2.5, 3.5, -2.5, -3.5, 0.5, 1.5, -0.5, 126.5, -127, 1.4999999, 7]);
  for (let i = 12; i < 32; i++) x[i] = i - 40.25;
  // The partial block is all zero: d = 0, codes 0.
  const want = Array.from(x, (v, i) => (i >= 32 ? 0 : i < 12 ? [127, 2, 4, -2, -4, 0, 2, -0, 126, -127, 1, 7][i] : Math.round(v)));
  for (const kind of ['int8', 'int4'] as const) {
    // Row r is e_r: int8 code 1 (int4 nibble 9 = 1 + 8) at column r, scale 1.
    const bytes = kind === 'int8' ? n : n / 2;
    const data = new Uint8Array(n * bytes).fill(kind === 'int8' ? 0 : 0x88);
    for (let r = 0; r < n; r++) {
      if (kind === 'int8') data[r * bytes + r] = 1;
      else data[r * bytes + (r >> 1)] = r & 1 ? 0x98 : 0x89;
    }
    const wt: WeightTensor = { name: `eye_${kind}`, shape: [n, n], format: { kind, group: 'c' }, data, scales: new Float32Array(n).fill(1), source: 'test' };
    for (const B of [ref, ...wasmAll] as Backend[]) {
      B.resetScratch();
      const m = B.prepare(wt);
      for (const T of [1, 3]) {
        const xs = B.scratch(T * n);
        for (let t = 0; t < T; t++) xs.set(x, t * n);
        const out = B.scratch(T * n);
        B.matmul(xs, T, m, out);
        for (let t = 0; t < T; t++) assert.deepEqual(Array.from(out.subarray(t * n, (t + 1) * n)), want.map((v) => v + 0), `${B.name} ${kind} T=${T}`);
      }
    }
  }
});

test('q8 activations: a NaN or an infinity in a block makes every output that reads the block non-finite, on every backend', () => {
  // The kernels round codes with an add-the-magic-constant trick and take the block maximum on
  // the bits: a NaN must still win the maximum (scale NaN), an infinity give an infinite scale.
  const n = 64;
  for (const kind of ['int8', 'int4'] as const) {
    const bytes = kind === 'int8' ? n : n / 2;
    const data = new Uint8Array(n * bytes).fill(kind === 'int8' ? 1 : 0x99); // every weight 1
    const wt: WeightTensor = { name: `ones_${kind}`, shape: [2, n], format: { kind, group: 32 }, data: data.subarray(0, 2 * bytes), scales: new Float32Array(4).fill(1), source: 'test' };
    for (const bad of [NaN, Infinity, -Infinity]) {
      for (const B of [ref, ...wasmAll] as Backend[]) {
        B.resetScratch();
        const m = B.prepare(wt);
        for (const T of [1, 3]) {
          const xs = fillRandom(B.scratch(T * n), 5);
          xs[(T - 1) * n + 7] = bad; // the last token's first block
          const out = B.scratch(T * 2);
          B.matmul(xs, T, m, out);
          for (let t = 0; t < T; t++) {
            for (let r = 0; r < 2; r++) {
              const v = out[t * 2 + r];
              assert.equal(Number.isFinite(v), t !== T - 1, `${B.name} ${kind} ${bad} T=${T} token ${t} row ${r}: ${v}`);
            }
          }
        }
      }
    }
  }
});

test("activations 'f32': int8/int4/lut take the f32 path and match the reference", () => {
  for (const { format, rows, cols } of [...Q8_CASES, ...LUT_CASES]) {
    const wt = randomWeight(format, rows, cols, rows + cols);
    const w = decoded(wt);
    const mw = wasmF32.prepare(wt) as WasmMatrix;
    assert.equal(mw.q8, false);
    for (const T of [1, 7]) {
      wasmF32.resetScratch();
      const x = fillRandom(wasmF32.scratch(T * cols), 5 + T);
      const out = wasmF32.scratch(T * rows);
      wasmF32.matmul(x, T, mw, out);
      const want = new Float32Array(T * rows);
      refF32.matmul(x, T, refF32.prepare(wt), want);
      checkMatmul(`f32 ${formatName(format)} T=${T}`, out, want, x, w, T, rows, cols);
    }
  }
  assert.throws(() => new WasmBackend({ threads: 1, activations: 'q4' as 'q8' }), /activations must be 'q8' or 'f32'/);
  assert.throws(() => makeBackend('reference', { activations: 'int8' as 'q8' }), /activations must be 'q8' or 'f32'/);
});

// Whole model. q8 codes are a discontinuous function of the activations: when an input lies a few
// ulps from a rounding tie, the reference's f64 norms and attention can round it the other way
// than wasm's f32 ones, and that flip (one code off by 1) propagates through the KV cache. Both
// runs' matmul inputs are quantized here and compared call by call: the strict comparison covers
// every position before the first differing code (at least half of them); with f32 activations, all.
interface Watch { now: number; calls: { pos: number; codes: Int32Array; x: Float32Array }[] }

function watchCodes(B: Backend, w: Watch): () => void {
  const orig = B.matmul, origMany = B.matmuls;
  const record = (x: Float32Array, T: number, m: Matrix) => {
    const codes = new Int32Array(T * m.cols);
    const d = new Float64Array(Math.ceil(m.cols / 32));
    for (let t = 0; t < T; t++) quantizeQ8(x, t * m.cols, m.cols, codes.subarray(t * m.cols), d);
    w.calls.push({ pos: w.now, codes, x: x.slice(0, T * m.cols) });
  };
  // matmuls() is watched job by job (a backend may run it through matmul(): recorded once).
  let inMany = false;
  B.matmul = (x, T, m, out) => {
    if (!inMany) record(x, T, m);
    orig.call(B, x, T, m, out);
  };
  B.matmuls = (jobs) => {
    for (const j of jobs) record(j.x, j.T, j.w);
    inMany = true;
    try {
      origMany.call(B, jobs);
    } finally {
      inMany = false;
    }
  };
  return () => {
    B.matmul = orig;
    B.matmuls = origMany;
  };
}

/** Position of the first matmul call whose input codes differ between two runs (n if none). */
function firstFlip(a: Watch, b: Watch, n: number): number {
  assert.equal(a.calls.length, b.calls.length);
  for (let k = 0; k < a.calls.length; k++) {
    const p = a.calls[k].codes, q = b.calls[k].codes;
    for (let i = 0; i < p.length; i++) {
      if (p[i] !== q[i]) {
        // A flip is a tie rounded two ways: codes 1 apart from inputs that agree to ~1e-5.
        assert.equal(Math.abs(p[i] - q[i]), 1, `call ${k}: codes ${p[i]} vs ${q[i]}`);
        const xa = a.calls[k].x[i], xb = b.calls[k].x[i];
        assert.ok(Math.abs(xa - xb) <= 1e-5 * Math.abs(xa), `call ${k}: inputs ${xa} vs ${xb}`);
        return a.calls[k].pos;
      }
    }
  }
  return n;
}

test('whole tiny model at int8:32, int4:32 and lut4:4/lut6:4: wasm = reference, top-1 at every position (q8: up to a code flip)', async (t) => {
  const fx = await tinyFixture(3);
  // Four short sequences from fresh sessions, so a flip ends the comparison of one sequence only.
  const seqs = [13, 14, 15, 16].map((seed) => tokenSequence(6, seed));
  try {
    for (const quant of ['all=int8:32', 'all=int4:32', 'attn=lut4:4,ffn=lut6:4']) {
      const dir = join(fx.root, quant.replace(/[=:,]/g, '-'));
      await convert({ src: fx.dir, out: dir, plan: buildPlan({ quant: quant.split(','), weightThreshold: 0 }), command: 'test' });
      // Decode token by token (so a flip is pinned to a position), every call of B.matmul watched.
      const run = (B: Backend, q8: boolean) => {
        const model = loadModel(dir, B, { tokenizer: false }).model;
        const V = model.vocabSize;
        return seqs.map((ids) => {
          const w: Watch = { now: 0, calls: [] };
          const unwatch = q8 ? watchCodes(B, w) : () => {};
          const s = new Session(model, { contextLength: 64 });
          const out = new Float32Array(ids.length * V);
          try {
            for (let i = 0; i < ids.length; i++) {
              w.now = i;
              out.set(s.step(ids[i]), i * V);
            }
          } finally {
            unwatch();
          }
          return { out, V, w };
        });
      };
      const wants = new Map<string, Float32Array>();
      for (const activations of ['f32', 'q8'] as const) {
        const want = run(makeBackend('reference', { activations }), activations === 'q8');
        wants.set(activations, want[0].out);
        const B = new WasmBackend({ threads: 2, activations, minParallelWork: 1 });
        let got;
        try {
          got = run(B, activations === 'q8');
        } finally {
          B.dispose();
        }
        let compared = 0, worst = 0;
        const flips: number[] = [];
        for (let k = 0; k < seqs.length; k++) {
          const n = seqs[k].length, V = want[k].V;
          const upTo = activations === 'q8' ? firstFlip(got[k].w, want[k].w, n) : n;
          if (upTo < n) flips.push(upTo);
          for (let i = 0; i < upTo; i++) {
            const g = got[k].out.subarray(i * V, (i + 1) * V), w = want[k].out.subarray(i * V, (i + 1) * V);
            worst = Math.max(worst, maxAbsDiff(g, w));
            assert.equal(argmax(g), argmax(w), `${quant} ${activations}: sequence ${k}, top-1 at ${i}`);
          }
          compared += upTo;
        }
        t.diagnostic(`${quant} activations ${activations}: max |Δlogit| ${worst.toExponential(2)} over ${compared} positions; code flips at ${flips.length ? flips.join(', ') : 'none'}`);
        assert.ok(worst <= 1e-3, `${quant} ${activations}: max |Δlogit| ${worst}`);
        assert.ok(compared >= 12, `${quant}: only ${compared} positions before code flips; change the token seeds`);
      }
      assert.ok(maxAbsDiff(wants.get('q8')!, wants.get('f32')!) > 1e-4, 'q8 activations change the logits');
    }
  } finally {
    fx.cleanup();
  }
});
