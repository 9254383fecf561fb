// Gemma 4 (dense) against llama.cpp, an implementation nobody here wrote: the tiny Gemma 4 fixture
// is exported to an F32 GGUF (architecture gemma4) and the same tokens are teacher-forced through
// both engines over five sliding windows, lutra's prefill and token-by-token decode on both
// backends, llama.cpp with an f32 KV cache and flash attention off (with flash attention llama.cpp
// casts K and V to f16 even from an f32 cache).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeFixture } from '../src/model/fixture.js';
import { exportGguf } from '../src/io/gguf-export.js';
import { Checkpoint } from '../src/io/checkpoint.js';
import { gemma4 } from '../src/arch/gemma4/index.js';
import type { Gemma4Config } from '../src/arch/config-types.js';
import { loadModel } from '../src/runtime/load.js';
import { ReferenceBackend } from '../src/backend/reference/index.js';
import { WasmBackend } from '../src/backend/wasm/index.js';
import type { Backend } from '../src/backend/backend.js';
import { Session } from '../src/runtime/session.js';
import { LlamaCppOracle } from '../src/verify/llama-cpp.js';
import { klDivergence, logSoftmax, top2 } from '../src/verify/metrics.js';
import { LutraError } from '../src/util/errors.js';
import { tokenSequence } from './helpers.js';
import { GgmlNumericsBackend } from './ggml-numerics.js';

const root = mkdtempSync(join(tmpdir(), 'lutra-gemma4-oracle-'));
test.after(() => rmSync(root, { recursive: true, force: true }));
const dir = join(root, 'tiny-gemma4');
await writeFixture(dir, 'tiny-gemma4', 3);

/** llama.cpp's CPU GELU: a table of f16 results indexed by the f16-rounded input (test-only emulation). */
class GeluTableBackend extends GgmlNumericsBackend {
  constructor() {
    super({ q8: false, norm: false });
  }
}

function topK(row: ArrayLike<number>, k: number): number[] {
  const best: number[] = [];
  for (let v = 0; v < row.length; v++) {
    if (best.length < k || row[v] > row[best[best.length - 1]]) {
      best.push(v);
      best.sort((a, b) => row[b] - row[a]);
      if (best.length > k) best.pop();
    }
  }
  return best;
}

interface Stats { klMean: number; klMax: number; maxAbs: number; disagree: number; excluded: number }

/** KL(llama.cpp ‖ lutra) per position, max |Δ log p| over llama.cpp's top 20 tokens, top-1 where llama.cpp's margin > 1e-2. */
function stats(llama: Float32Array[], ours: (i: number) => Float64Array): Stats {
  let klSum = 0, klMax = 0, maxAbs = 0, disagree = 0, excluded = 0;
  llama.forEach((theirs, i) => {
    const mine = ours(i);
    const kl = klDivergence(theirs, mine);
    klSum += kl;
    klMax = Math.max(klMax, kl);
    for (const v of topK(theirs, 20)) maxAbs = Math.max(maxAbs, Math.abs(theirs[v] - mine[v]));
    const ref = top2(theirs);
    if (ref.margin <= 1e-2) excluded++;
    else if (top2(mine).top !== ref.top) disagree++;
  });
  return { klMean: klSum / llama.length, klMax, maxAbs, disagree, excluded };
}

const fmt = (s: Stats) => `mean KL ${s.klMean.toExponential(2)}, max KL ${s.klMax.toExponential(2)}, max |Δ log p| ${s.maxAbs.toExponential(2)}, top-1 disagreements ${s.disagree} (${s.excluded} near-ties excluded)`;

test('lutra Gemma 4 (reference and wasm, prefill and decode) matches llama.cpp over five sliding windows', { timeout: 300_000 }, async (t) => {
  const ck = Checkpoint.open(dir);
  const cfg = ck.config as Gemma4Config;
  ck.close();
  assert.deepEqual(gemma4.gguf.differences(cfg), [], 'the fixture must sit where llama.cpp and HF agree');
  const gguf = join(root, 'tiny-gemma4-f32.gguf');
  await exportGguf({ model: dir, out: gguf, type: 'f32' });
  const ids = tokenSequence(8 * cfg.slidingWindow, 99); // 64 positions, eight windows

  const wasm = new WasmBackend({ threads: 2, minParallelWork: 1 });
  const runs: { name: string; rows: (i: number) => Float64Array }[] = [];
  try {
    for (const [name, B] of [['reference', new ReferenceBackend()], ['wasm', wasm], ['reference + f16 GELU table', new GeluTableBackend()]] as [string, Backend][]) {
      const { model } = loadModel(dir, B, { tokenizer: false });
      const V = model.vocabSize;
      const prefill = new Session(model, { contextLength: 128, prefillBatch: 24, qChunk: 8 }).prefill(ids, { all: true }).slice();
      const stepper = new Session(model, { contextLength: 128 });
      const decode = ids.map((id) => logSoftmax(stepper.step(id)));
      model.close?.();
      runs.push({ name: `${name} prefill`, rows: (i) => logSoftmax(prefill.subarray(i * V, (i + 1) * V)) });
      if (name !== 'reference + f16 GELU table') runs.push({ name: `${name} decode`, rows: (i) => decode[i] });
    }
  } finally {
    wasm.dispose();
  }

  const oracle = await LlamaCppOracle.load(gguf, { threads: 2, contextSize: 128, kvCacheType: 'f32', flashAttention: false });
  let llama: Float32Array[];
  try {
    llama = await oracle.teacherForced(ids);
  } finally {
    await oracle.dispose();
  }
  const results = new Map<string, Stats>();
  for (const r of runs) {
    const s = stats(llama, r.rows);
    t.diagnostic(`${r.name} vs llama.cpp: ${fmt(s)}`);
    assert.equal(s.disagree, 0, `${r.name}: top-1 disagrees`);
    assert.ok(s.klMean < 1e-4, `${r.name}: mean KL ${s.klMean}`);
    assert.ok(s.klMax < 1e-3, `${r.name}: max KL ${s.klMax}`);
    assert.ok(s.excluded < llama.length / 10, `${r.name}: ${s.excluded} near-ties`);
    results.set(r.name, s);
  }
  // llama.cpp's f16 GELU table is the main difference: emulated (inputs ≥ 10 passing through in
  // f32, as ggml does), max |Δ log p| drops to the few-thousandths level of f32 rounding (measured:
  // 1.1e-2 → 3.1e-3) and the mean KL fifteen-fold (3.2e-6 → 2.1e-7).
  const plain = results.get('reference prefill')!;
  const table = results.get('reference + f16 GELU table prefill')!;
  assert.ok(plain.maxAbs < 2e-2, `max |Δ log p| ${plain.maxAbs}`);
  assert.ok(table.maxAbs < 6e-3 && table.maxAbs < 0.5 * plain.maxAbs, `with the GELU table: max |Δ log p| ${table.maxAbs}`);
  assert.ok(table.klMean < plain.klMean / 6, `with the GELU table: mean KL ${table.klMean}`);
});

test('export-gguf refuses a Gemma 4 layout llama.cpp cannot run (the layer before the KV-shared block is sliding)', async () => {
  const bad = join(root, 'bad-sharing');
  await writeFixture(bad, 'tiny-gemma4', 1);
  // Sharing starts at layer 6: HF's sources are layer 5 (sliding) and 4 (full); llama.cpp hard-codes
  // first−2 = 4 for sliding and first−1 = 5 for full layers, which is not the same model.
  const { readFileSync, writeFileSync } = await import('node:fs');
  const cfgPath = join(bad, 'config.json');
  const raw = JSON.parse(readFileSync(cfgPath, 'utf8'));
  raw.num_kv_shared_layers = 4;
  writeFileSync(cfgPath, JSON.stringify(raw));
  await assert.rejects(exportGguf({ model: bad, out: join(root, 'bad.gguf'), type: 'f32' }), (e: unknown) => e instanceof LutraError && /llama\.cpp's gemma4 cannot run this model/.test(e.message));
});
