// lutra (the reference backend and the wasm backend) against llama.cpp, an implementation nobody
// here wrote: the tiny fixture is exported to GGUF and the same tokens are teacher-forced through
// both engines, with the same thresholds for both lutra backends.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Checkpoint } from '../src/io/checkpoint.js';
import { gemma3LlamaCppDifferences } from '../src/arch/gemma3/gguf.js';
import type { Gemma3Config } from '../src/arch/config-types.js';
import { exportGguf } from '../src/io/gguf-export.js';
import { loadModel } from '../src/runtime/load.js';
import { ReferenceBackend } from '../src/backend/reference/index.js';
import { WasmBackend } from '../src/backend/wasm/index.js';
import type { Backend } from '../src/backend/backend.js';
import { Session } from '../src/runtime/session.js';
import { LlamaCppOracle } from '../src/verify/llama-cpp.js';
import { klDivergence, logSoftmax, top2 } from '../src/verify/metrics.js';
import { tinyFixture, tokenSequence } from './helpers.js';

const fx = await tinyFixture(0);

test('lutra (reference and wasm backends, prefill and decode) matches llama.cpp over 10 sliding windows', async (t) => {
  const src = Checkpoint.open(fx.dir);
  assert.deepEqual(gemma3LlamaCppDifferences(src.config as Gemma3Config), [], 'the fixture must sit where llama.cpp and HF agree');
  src.close();
  const gguf = join(fx.root, 'tiny-f32.gguf');
  await exportGguf({ model: fx.dir, out: gguf, type: 'f32' });

  // Both lutra backends, prefill and decode, computed before llama.cpp runs.
  const wasm = new WasmBackend({ threads: 2, minParallelWork: 1 });
  const runs: { name: string; prefill: Float32Array; decode: Float64Array[] }[] = [];
  let ids: number[] = [];
  let V = 0;
  try {
    for (const [name, B] of [['reference', new ReferenceBackend()], ['wasm', wasm]] as [string, Backend][]) {
      const { model } = loadModel(fx.dir, B, { tokenizer: false });
      const W = model.cfg.slidingWindow;
      const n = 10 * W; // 160 positions: the sliding rings wrap ten times
      assert.ok(n >= 128 && n >= 4 * W);
      ids = tokenSequence(n, 2024);
      V = model.vocabSize;
      const prefill = new Session(model, { contextLength: 256, prefillBatch: 48, qChunk: 16 }).prefill(ids, { all: true }).slice();
      const decoder = new Session(model, { contextLength: 256 });
      runs.push({ name, prefill, decode: ids.map((id) => logSoftmax(decoder.step(id))) });
    }
  } finally {
    wasm.dispose();
  }

  // f32 KV cache is the strict comparison; f16 is what stock llama.cpp uses.
  for (const kvCacheType of ['f32', 'f16'] as const) {
    const oracle = await LlamaCppOracle.load(gguf, { threads: 2, contextSize: 256, kvCacheType });
    let llama: Float32Array[];
    try {
      llama = await oracle.teacherForced(ids);
    } finally {
      await oracle.dispose();
    }
    // f16 keys/values perturb llama.cpp itself by ~1e-3 in log-probs, so top-1 flips at small
    // margins are reported there, and asserted only against the f32 cache.
    for (const r of runs) compare(t, `${r.name} vs llama.cpp KV ${kvCacheType}`, llama, r.prefill, r.decode, V, kvCacheType === 'f32');
  }
});

function compare(t: { diagnostic(msg: string): void }, label: string, llama: Float32Array[], prefill: Float32Array, decode: Float64Array[], V: number, strictTop1: boolean) {
  const n = llama.length;
  for (const [mode, rowOf] of [
    ['prefill', (i: number) => logSoftmax(prefill.subarray(i * V, (i + 1) * V))],
    ['decode', (i: number) => decode[i]],
  ] as const) {
    let klSum = 0;
    let klMax = 0;
    let excluded = 0;
    let disagree = 0;
    const flips: string[] = [];
    for (let i = 0; i < n; i++) {
      const ours = rowOf(i);
      const theirs = llama[i];
      const kl = klDivergence(theirs, ours);
      klSum += kl;
      klMax = Math.max(klMax, kl);
      const ref = top2(theirs);
      if (ref.margin <= 1e-3) {
        excluded++;
        continue;
      }
      if (top2(ours).top !== ref.top) {
        disagree++;
        flips.push(`position ${i} (llama.cpp margin ${ref.margin.toExponential(2)})`);
      }
    }
    const klMean = klSum / n;
    t.diagnostic(`${label}, lutra ${mode}: ${n} positions, mean KL(llama.cpp ‖ lutra) ${klMean.toExponential(2)}, max ${klMax.toExponential(2)}, top-1 disagreements ${disagree}, excluded by margin ≤ 1e-3: ${excluded}${flips.length ? '; flips at ' + flips.join(', ') : ''}`);
    if (strictTop1) assert.equal(disagree, 0, `${mode}: top-1 disagrees at ${disagree} positions`);
    assert.ok(klMean < 1e-4, `${mode}: mean KL ${klMean}`);
    assert.ok(klMax < 1e-3, `${mode}: max KL ${klMax}`);
    assert.ok(excluded < n / 10, `${mode}: ${excluded} positions excluded`);
  }
}

test.after(() => fx.cleanup());
