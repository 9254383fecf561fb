// fp16 numerics: IEEE half rounding, the fp16 backend wrapper, overflow detection that
// names layer, op and position, and α scaling measured with the harness.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { f16round, roundToF16 } from '../src/fp16/round.js';
import { bf16BitsToF32, f16BitsToF32, f32ToF16Bits } from '../src/util/half.js';
import { weightAtF16 } from '../src/fp16/backend.js';
import { parseNumerics } from '../src/fp16/numerics.js';
import { loadModel } from '../src/runtime/load.js';
import { ReferenceBackend } from '../src/backend/reference/index.js';
import { WasmBackend } from '../src/backend/wasm/index.js';
import { Session } from '../src/runtime/session.js';
import { Fp16OverflowError } from '../src/fp16/overflow.js';
import { argmax, tinyFixture, tokenSequence } from './helpers.js';

const fx = await tinyFixture(0);
after(() => fx.cleanup());
const cli = (...args: string[]) => spawnSync(process.execPath, [resolve('dist/src/cli/main.js'), ...args], { encoding: 'utf8' });

// An independent oracle: the nearest of the sorted finite f16 values by exact f64 comparison,
// ties to the even bit pattern, ±inf from 65520 up.
const positives = Array.from({ length: 0x7c00 }, (_, h) => f16BitsToF32(h)); // 0 .. 65504, ascending
function nearestF16(x: number): number {
  const a = Math.abs(x);
  if (a >= 65520) return Math.sign(x) * Infinity;
  let lo = 0;
  let hi = positives.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (positives[mid] <= a) lo = mid;
    else hi = mid;
  }
  const dl = a - positives[lo];
  const dh = positives[hi] - a;
  const h = dl < dh || (dl === dh && (lo & 1) === 0) ? lo : hi;
  return (x < 0 || Object.is(x, -0) ? -1 : 1) * positives[h];
}

test('fp16 rounding: all 65 536 half patterns round-trip, and random f32 values match an independent oracle', () => {
  for (let h = 0; h < 0x10000; h++) {
    const x = f16BitsToF32(h);
    const r = f16round(x);
    if (Number.isNaN(x)) assert.ok(Number.isNaN(r), `pattern ${h.toString(16)}: NaN stays NaN`);
    else {
      assert.ok(Object.is(r, x), `pattern ${h.toString(16)}: ${x} → ${r}`);
      assert.equal(f32ToF16Bits(r), h);
    }
  }
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  let s = 12345;
  for (let i = 0; i < 200_000; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    // Exponents concentrated where f16 lives (subnormals to overflow), plus the full range.
    u[0] = i % 4 === 0 ? s : ((s & 0x807fffff) | ((95 + (s % 52)) << 23)) >>> 0;
    const x = f[0];
    if (Number.isNaN(x)) continue;
    const got = f16round(x);
    assert.ok(Object.is(got, nearestF16(x)), `0x${u[0].toString(16)} (${x}): got ${got}, expected ${nearestF16(x)}`);
  }
});

test('fp16 rounding edge cases: ties to even, subnormals, overflow to inf', () => {
  const cases: [number, number][] = [
    [65504, 65504], [65519.99, 65504], [65520, Infinity], [-65520, -Infinity], [1e6, Infinity],
    [1 + 2 ** -11, 1], [1 + 3 * 2 ** -11, 1 + 2 ** -9], [2048 + 1, 2048], [2048 + 3, 2052],
    [2 ** -25, 0], [2 ** -25 + 2 ** -40, 2 ** -24], [3 * 2 ** -25, 2 ** -23], [2 ** -14, 2 ** -14],
    [1023 * 2 ** -24, 1023 * 2 ** -24], [(1023.5) * 2 ** -24, 1024 * 2 ** -24], [1e-10, 0], [-1e-10, -0],
  ];
  for (const [x, want] of cases) assert.ok(Object.is(f16round(x), want), `${x} → ${f16round(x)}, expected ${want}`);
  const a = new Float32Array([1, 70000, -3, 1e9]);
  assert.equal(roundToF16(a), 1, 'index of the first non-finite result');
  assert.deepEqual(Array.from(a), [1, Infinity, -3, Infinity]);
});

test('the wasm SIMD rounding is bit-identical to the plain one (every f16 pattern, random f32 patterns, odd lengths)', () => {
  const wasm = new WasmBackend({ threads: 1 });
  try {
    const n = 0x10000 + 300_003; // not a multiple of 4: the scalar tail runs too
    const a = wasm.alloc(n);
    const u = new Uint32Array(a.buffer, a.byteOffset, n);
    for (let h = 0; h < 0x10000; h++) a[h] = f16BitsToF32(h) * (h % 3 === 0 ? 1.0009765625 : 1); // exact and between
    let s = 99;
    for (let i = 0x10000; i < n; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      u[i] = i % 5 === 0 ? s : ((s & 0x807fffff) | ((95 + (s % 52)) << 23)) >>> 0;
    }
    u[n - 1] = 0x7f800000; // +inf in the tail
    u[70000] = 0x477ff000; // 65520: rounds to inf in the SIMD part
    const plain = a.slice();
    const firstPlain = roundToF16(plain);
    const firstWasm = wasm.roundToF16(a, n);
    assert.equal(firstWasm, firstPlain);
    const pu = new Uint32Array(plain.buffer);
    let bad = 0;
    for (let i = 0; i < n; i++) {
      if (u[i] !== pu[i] && !(Number.isNaN(a[i]) && Number.isNaN(plain[i]))) {
        if (bad++ < 5) assert.fail(`index ${i}: wasm 0x${u[i].toString(16)} vs plain 0x${pu[i].toString(16)}`);
      }
    }
    assert.equal(bad, 0);
  } finally {
    wasm.dispose();
  }
});

test('fp16 weights: a bf16 weight rounded to fp16 is still exactly bf16 (it keeps its fast format), f32 becomes f16', () => {
  const n = 0x10000;
  const bf = new Uint16Array(n).map((_, i) => i); // every bf16 pattern
  const w = weightAtF16({ name: 'w', shape: [n], format: { kind: 'bf16' }, data: new Uint8Array(bf.buffer), source: 'test' });
  assert.equal(w.format.kind, 'bf16');
  const out = new Uint16Array(w.data.buffer, w.data.byteOffset, n);
  let changed = 0;
  for (let i = 0; i < n; i++) {
    const x = bf16BitsToF32(i);
    const want = f16round(x);
    const got = bf16BitsToF32(out[i]);
    if (Number.isNaN(x)) assert.ok(Number.isNaN(got));
    else assert.ok(Object.is(got, want), `bf16 0x${i.toString(16)} (${x}): got ${got}, fp16 value ${want}`);
    if (!Object.is(got, x) && !Number.isNaN(x)) changed++;
  }
  assert.ok(changed > 20000, `${changed} bf16 values are outside fp16 (tiny or huge)`);
  const f = weightAtF16({ name: 'v', shape: [2], format: { kind: 'f32' }, data: new Uint8Array(new Float32Array([1 / 3, 70000]).buffer), source: 'test' });
  assert.equal(f.format.kind, 'f16');
  assert.deepEqual(Array.from(new Uint16Array(f.data.buffer, f.data.byteOffset, 2), f16BitsToF32), [f16round(1 / 3), Infinity]);
});

test('--numerics specs parse, and bad ones name the flag', () => {
  assert.deepEqual(parseNumerics('fp16,accumulate=fp16,clamp'), { mode: 'fp16', accumulate: 'fp16', clampResidual: true });
  assert.throws(() => parseNumerics('fp8'), /--numerics fp8: expected f32 or fp16/);
  assert.throws(() => parseNumerics('f32,clamp'), /only applies to fp16/);
});

test('fp16 numerics on a normal model: reference and wasm agree, and both stay close to f32', () => {
  const ids = tokenSequence(24, 7);
  const logits = (backend: ReferenceBackend | WasmBackend, mode: string) => {
    const { model } = loadModel(fx.dir, backend, { tokenizer: false, numerics: parseNumerics(mode) });
    return new Session(model, { contextLength: 32, prefillBatch: 8 }).prefill(ids, { all: true });
  };
  const wasm = new WasmBackend({ threads: 2 });
  try {
    const ref16 = logits(new ReferenceBackend(), 'fp16');
    const wasm16 = logits(wasm, 'fp16');
    const f32 = logits(new ReferenceBackend(), 'f32');
    const V = ref16.length / ids.length;
    let maxD = 0;
    let maxF = 0;
    for (let i = 0; i < ref16.length; i++) {
      maxD = Math.max(maxD, Math.abs(ref16[i] - wasm16[i]));
      maxF = Math.max(maxF, Math.abs(ref16[i] - f32[i]));
      // Every fp16 logit is an fp16 value.
      if (i % 997 === 0) assert.equal(f16round(ref16[i]), ref16[i]);
    }
    // Logits here reach ~30, where one fp16 ulp is 1/64. The backends differ in f32 summation
    // order, so a value near an fp16 rounding boundary can land on either side and the difference
    // propagates: measured 0.052 (~3 ulps), against 0.071 between fp16 and f32 themselves.
    assert.ok(maxD < 0.15, `reference vs wasm under fp16: max |Δlogit| ${maxD}`);
    assert.ok(maxF < 0.3 && maxF > 0, `fp16 vs f32: max |Δlogit| ${maxF}`);
    const top = (a: Float32Array, t: number) => argmax(a.subarray(t * V, (t + 1) * V));
    for (let t = 0; t < ids.length; t++) assert.equal(top(ref16, t), top(f32, t), `position ${t}: fp16 top-1 differs from f32`);
  } finally {
    wasm.dispose();
  }
});

const hot = join(fx.root, 'hot');

test('lutra fixture --residual-peak builds a model whose f32 residual passes fp16 at the chosen layer', () => {
  const r = cli('fixture', '--out', hot, '--residual-peak', '2e5');
  assert.equal(r.status, 0, r.stderr);
  const m = /f32 residual peak ([\d.e+]+) \(layer 3 gain raised\); first fp16 overflow: layer 3 ffn_post; recommended α ([\d.]+)/.exec(r.stderr);
  assert.ok(m, r.stderr);
  assert.ok(Math.abs(Number(m[1]) / 2e5 - 1) < 0.01, `peak ${m[1]}`); // bf16 storage of the gain
  assert.equal(Number(m[2]), 0.25);
  assert.match(cli('fixture', '--out', join(fx.root, 'x'), '--residual-peak', 'big').stderr, /--residual-peak "big": expected a number/);
});

test('unscaled fp16 on the overflow fixture stops with an error naming layer, op and position', () => {
  const r = cli('generate', '--model', hot, '--prompt', 'Hello there', '--max-tokens', '4', '--numerics', 'fp16', '--raw');
  assert.equal(r.status, 1);
  // The loading line, then the error on one line.
  assert.match(r.stderr, /^loading .*\.\.\.\nlutra: error: fp16 overflow at layer 3 post_feedforward_layernorm output, position \d+ \(value -?Infinity; fp16 holds at most ±65504\)[^\n]*\n$/);
  assert.doesNotMatch(r.stderr, /at .*\.js:\d+/, 'no stack trace');
  // The same in-process, on the reference backend, and --on-overflow continue records it instead.
  const { model } = loadModel(hot, new ReferenceBackend(), { tokenizer: false, numerics: parseNumerics('fp16') });
  assert.throws(() => new Session(model, { contextLength: 16 }).prefill(tokenSequence(6, 3)), (e: unknown) => e instanceof Fp16OverflowError && e.event.layer === 3 && e.event.point === 'ffn_post');
  const s = new Session(model, { contextLength: 16, onOverflow: 'continue' });
  s.prefill(tokenSequence(6, 3));
  assert.deepEqual([s.overflow?.layer, s.overflow?.point], [3, 'ffn_post']);
  // Clamping the residual adds (the mlx-style alternative) runs through without non-finite values.
  const c = cli('generate', '--model', hot, '--prompt', 'Hello there', '--max-tokens', '4', '--numerics', 'fp16,clamp', '--raw');
  assert.equal(c.status, 0, c.stderr);
});

test('with --fp16-scale auto, fp16 numerics match the f32 original: KL < 0.01, corr > 0.99, match ≥ 98% over 128 tokens', () => {
  const scaled = join(fx.root, 'hot-auto');
  const conv = cli('convert', '--model', hot, '--out', scaled, '--fp16-scale', 'auto');
  assert.equal(conv.status, 0, conv.stderr);
  assert.match(readFileSync(join(scaled, 'meta.yaml'), 'utf8'), /^numerics: fp16$/m);
  const out = join(fx.root, 'cmp');
  // The candidate runs in fp16 because its meta.yaml says so; the reference is the f32 original.
  const r = cli('compare', scaled, '--reference', hot, '--prompt', 'Explain how a river carves a canyon.', '--max-tokens', '128',
    '--candidate-backend', 'wasm', '--reference-backend', 'wasm', '--out-dir', out, '--gate', 'kl<0.01,corr>0.99,match>=0.98');
  assert.equal(r.status, 0, r.stdout + r.stderr);
  const s = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8'));
  assert.match(s.candidate_engine, /fp16/);
  assert.equal(s.steps, 128);
  assert.ok(s.kl_mean < 0.01 && s.corr_mean > 0.99 && s.match_rate >= 0.98, JSON.stringify({ kl: s.kl_mean, corr: s.corr_mean, match: s.match_rate }));
});
