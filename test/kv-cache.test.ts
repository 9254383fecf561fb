// The f16 KV cache: what it stores, that both backends read it alike far past the sliding window,
// what it costs against f32, and how the library and the CLI choose it.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { ReferenceBackend } from '../src/backend/reference/index.js';
import { WasmBackend } from '../src/backend/wasm/index.js';
import { KVCache } from '../src/runtime/kv-cache.js';
import { loadModel } from '../src/runtime/load.js';
import { Session } from '../src/runtime/session.js';
import { loadModel as loadLibraryModel } from '../src/api/model.js';
import { f16BitsToF32, f32ToF16Bits } from '../src/util/half.js';
import { tinyFixture, maxAbsDiff, tokenSequence, argmax } from './helpers.js';

const wasm = new WasmBackend({ threads: 2 });
const ref = new ReferenceBackend();
after(() => wasm.dispose());

test('an f16 cache stores the nearest half, clamps past ±65504, and takes half the bytes', () => {
  const layout = [{ kvDim: 8, window: 0, source: 0 }, { kvDim: 8, window: 4, source: 1 }];
  const c = new KVCache(ref, layout, 16, 0, 'f16');
  const k = Float32Array.from([1 / 3, -2.5, 70000, -1e6, 1e-9, 6e-5, 65519, 0]);
  const v = Float32Array.from(k, (x) => -x);
  c.write(0, k, v, 3, 1);
  const slot = (a: Float32Array, s: number) => Array.from(new Uint16Array(a.buffer, a.byteOffset, 16 * 8).subarray(s * 8, s * 8 + 8), f16BitsToF32);
  const want = [0.333251953125, -2.5, 65504, -65504, 0, 0.00006002187728881836, 65504, 0];
  assert.deepEqual(slot(c.layers[0].k, 3), want);
  assert.deepEqual(slot(c.layers[0].v, 3), want.map((x) => (x === 0 ? -0 : -x)));
  c.write(0, Float32Array.from([Infinity, -Infinity, NaN, 2 ** -20, -0, 1, 65504, 65505]), new Float32Array(8), 4, 1);
  const odd = slot(c.layers[0].k, 4);
  assert.deepEqual(odd.slice(0, 2), [65504, -65504]);
  assert.ok(Number.isNaN(odd[2]));
  assert.deepEqual(odd.slice(3), [2 ** -20, -0, 1, 65504, 65504]);
  // Every exponent, random mantissas: the nearest half (ties to even) as the general conversion gives it.
  const wide = new KVCache(ref, [{ kvDim: 4096, window: 0, source: 0 }], 1, 0, 'f16');
  const x = new Float32Array(4096);
  const bits = new Uint32Array(x.buffer);
  let seed = 7;
  for (let i = 0; i < x.length; i++) {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    bits[i] = ((seed & 0x80000000) | (((90 + (i % 70)) & 0xff) << 23) | (seed & 0x7fffff)) >>> 0; // exponents 2^-37 .. 2^32
  }
  wide.write(0, x, x, 0, 1);
  const got = new Uint16Array(wide.layers[0].k.buffer, wide.layers[0].k.byteOffset, 4096);
  for (let i = 0; i < x.length; i++) {
    const want = f32ToF16Bits(Math.max(-65504, Math.min(65504, x[i])));
    if (got[i] !== want) assert.fail(`${x[i]}: half 0x${got[i].toString(16)}, expected 0x${want.toString(16)}`);
  }
  assert.equal(c.layers[0].k.length, 64, 'f16: two halves to an element');
  assert.equal(KVCache.bytesFor(layout, 16, 0, 'f16') * 2, KVCache.bytesFor(layout, 16, 0, 'f32'));
  assert.throws(() => new KVCache(ref, layout, 16, 0, 'bf16' as 'f16'), /KV cache type 'bf16': expected one of f32, f16/);
});

test('f16 KV cache at 4k+ positions, far past the window: wasm = reference, and close to f32', async (t) => {
  const fx = await tinyFixture(3);
  try {
    // The tiny fixture allows 2048 positions; its RoPE and weights do not care, so raise that.
    const cfgPath = join(fx.dir, 'config.json');
    const cfg = JSON.parse(readFileSync(cfgPath, 'utf8'));
    cfg.max_position_embeddings = 8192;
    writeFileSync(cfgPath, JSON.stringify(cfg));
    const wasmModel = loadModel(fx.dir, wasm, { tokenizer: false }).model;
    const refModel = loadModel(fx.dir, ref, { tokenizer: false }).model;
    const W = wasmModel.cfg.slidingWindow;
    const ids = tokenSequence(4200, 11);
    const steps = tokenSequence(6, 12).slice(1);
    const run = (model: typeof wasmModel, kvType: 'f32' | 'f16') => {
      const s = new Session(model, { contextLength: ids.length + steps.length, prefillBatch: 512, kvType });
      const rows = [s.prefill(ids)];
      for (const id of steps) rows.push(s.step(id));
      s.dispose();
      return rows;
    };
    const w16 = run(wasmModel, 'f16');
    const r16 = run(refModel, 'f16');
    const w32 = run(wasmModel, 'f32');
    let spread = 0;
    for (const x of r16[0]) spread = Math.max(spread, Math.abs(x));
    let worst = 0, worst32 = 0;
    for (let i = 0; i < w16.length; i++) {
      const d = maxAbsDiff(w16[i], r16[i]);
      worst = Math.max(worst, d / spread);
      // Both backends round this pass's keys and values to halves: a 1e-7 difference in a key (f32
      // against f64 sums before it) that straddles a rounding boundary becomes a half-ulp step
      // (2^-11 relative), so the bound is looser than f32's 1e-4 (measured up to ~1e-4).
      assert.ok(d <= 5e-4 * spread, `position ${ids.length - 1 + i} (window ${W}): wasm vs reference, both f16 KV: max |Δlogit| ${d}`);
      assert.equal(argmax(w16[i]), argmax(r16[i]));
      // Against f32 the halves' rounding shows, but only just (measured 3–5e-4 of the logit range).
      const d32 = maxAbsDiff(w16[i], w32[i]);
      worst32 = Math.max(worst32, d32 / spread);
      assert.ok(d32 > 0 && d32 <= 2e-3 * spread, `position ${ids.length - 1 + i}: f16 vs f32 KV: max |Δlogit| ${d32} (logit range ${spread})`);
    }
    t.diagnostic(`max |Δlogit| / max |logit|: wasm vs reference (f16 KV) ${worst.toExponential(2)}; f16 vs f32 KV ${worst32.toExponential(2)}`);
  } finally {
    fx.cleanup();
  }
});

test('library: kvCache f16 (the default) halves the KV bytes of f32 and generates the same text; a bad value is one clear error', async () => {
  const m16 = await loadLibraryModel('models/demo', { threads: 1 });
  const m32 = await loadLibraryModel('models/demo', { kvCache: 'f32', threads: 1 });
  try {
    assert.equal(m16.info.kvCache, 'f16');
    assert.equal(m32.info.kvCache, 'f32');
    assert.equal(m16.info.kvCacheBytes * 2, m32.info.kvCacheBytes);
    const a = await m16.complete('The LORD is my shepherd', { maxTokens: 24, temperature: 0 });
    const b = await m32.complete('The LORD is my shepherd', { maxTokens: 24, temperature: 0 });
    assert.equal(a.text, b.text, 'greedy text with an f16 cache = with f32 on the demo model');
  } finally {
    m16.dispose();
    m32.dispose();
  }
  await assert.rejects(loadLibraryModel('models/demo', { kvCache: 'q8' as 'f16' }), /kvCache "q8": expected one of f32, f16/);
});

test('CLI: --kv names the flag and the choices', () => {
  const r = spawnSync(process.execPath, ['dist/src/cli/main.js', 'generate', '-p', 'x', '--kv', 'f8'], { encoding: 'utf8' });
  assert.equal(r.status, 1);
  assert.equal(r.stderr.trim(), 'lutra: error: --kv f8: expected f32 or f16');
});
