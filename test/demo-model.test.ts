// The shipped demo model (models/demo): lutra reproduces the training recipe's held-out loss,
// agrees with llama.cpp over several sliding windows, and writes English.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { tmpdir } from 'node:os';
import { spawnSync } from 'node:child_process';
import { loadModel } from '../src/runtime/load.js';
import { ReferenceBackend } from '../src/backend/reference/index.js';
import { Session } from '../src/runtime/session.js';
import { Checkpoint } from '../src/io/checkpoint.js';
import { gemma3LlamaCppDifferences } from '../src/arch/gemma3/gguf.js';
import type { Gemma3Config } from '../src/arch/config-types.js';
import { exportGguf } from '../src/io/gguf-export.js';
import { LlamaCppOracle } from '../src/verify/llama-cpp.js';
import { klDivergence, logSoftmax, top2 } from '../src/verify/metrics.js';

const DEMO = resolve('models/demo');
const evalInfo = JSON.parse(readFileSync(join(DEMO, 'eval.json'), 'utf8'));
const { model, tokenizer } = loadModel(DEMO, new ReferenceBackend());
const V = model.vocabSize;

/** Windows of the held-out sample exactly as eval.json's protocol describes them. */
function windows(): number[][] {
  const text = readFileSync(join(DEMO, evalInfo.text_file), 'utf8');
  const ids = tokenizer!.encode(text, { bos: false });
  const size = evalInfo.window - 1;
  const out: number[][] = [];
  for (let s = 0; s < ids.length; s += size) {
    const w = ids.slice(s, s + size);
    if (w.length >= 64 || s === 0) out.push([tokenizer!.bosId, ...w]);
  }
  return out;
}

test('the reference backend reproduces the recipe\'s held-out loss within 1%', (t) => {
  let nll = 0;
  let n = 0;
  let top1 = 0;
  for (const w of windows()) {
    const logits = new Session(model, { contextLength: w.length, prefillBatch: 128 }).prefill(w, { all: true });
    for (let i = 0; i + 1 < w.length; i++) {
      const lp = logSoftmax(logits.subarray(i * V, (i + 1) * V));
      nll -= lp[w[i + 1]];
      top1 += Math.exp(lp[top2(lp).top]);
      n++;
    }
  }
  const loss = nll / n;
  t.diagnostic(`lutra reference: ${n} targets, mean loss ${loss.toFixed(6)} (recipe: ${evalInfo.mean_loss} over ${evalInfo.n_targets}), mean top-1 probability ${(top1 / n).toFixed(4)}`);
  assert.equal(n, evalInfo.n_targets);
  assert.ok(Math.abs(loss - evalInfo.mean_loss) / evalInfo.mean_loss < 0.01, `loss ${loss} vs ${evalInfo.mean_loss}`);
});

test('exported to GGUF, the demo model agrees with llama.cpp over 600 positions (past the 128-token window)', async (t) => {
  const src = Checkpoint.open(DEMO);
  assert.deepEqual(gemma3LlamaCppDifferences(src.config as Gemma3Config), []);
  const dir = mkdtempSync(join(tmpdir(), 'lutra-demo-'));
  try {
    const gguf = join(dir, 'demo.gguf');
    await exportGguf({ model: DEMO, out: gguf, type: 'f32' });
    const text = readFileSync(join(DEMO, 'heldout-full.txt'), 'utf8').slice(0, 6000);
    const ids = tokenizer!.encode(text).slice(0, 600);
    assert.equal(ids.length, 600);
    const oracle = await LlamaCppOracle.load(gguf, { threads: 2, contextSize: 1024 });
    let llama: Float32Array[];
    try {
      llama = await oracle.teacherForced(ids);
    } finally {
      await oracle.dispose();
    }
    const ours = new Session(model, { contextLength: 1024, prefillBatch: 64 }).prefill(ids, { all: true });
    let agree = 0;
    let klSum = 0;
    let klMax = 0;
    for (let i = 0; i < ids.length; i++) {
      const lp = logSoftmax(ours.subarray(i * V, (i + 1) * V));
      const kl = klDivergence(llama[i], lp);
      klSum += kl;
      klMax = Math.max(klMax, kl);
      if (top2(lp).top === top2(llama[i]).top) agree++;
    }
    const rate = agree / ids.length;
    t.diagnostic(`600 positions: top-1 agreement ${(100 * rate).toFixed(2)}%, mean KL(llama.cpp ‖ lutra) ${(klSum / ids.length).toExponential(2)}, max ${klMax.toExponential(2)}`);
    assert.ok(rate >= 0.999, `top-1 agreement ${rate}`);
    assert.ok(klSum / ids.length < 1e-3);
  } finally {
    src.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('`lutra generate --prompt "In the beginning"` writes English in the corpus style (no --model)', () => {
  const r = spawnSync(process.execPath, [resolve('dist/src/cli/main.js'), 'generate', '--prompt', 'In the beginning', '--raw', '--max-tokens', '40', '--quiet'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const words = r.stdout.split(/\s+/).filter((w) => /^[A-Za-z][a-z']*[,.;:!?]?$/.test(w));
  const all = r.stdout.split(/\s+/).filter(Boolean);
  assert.ok(all.length >= 15, `only ${all.length} words: ${r.stdout}`);
  assert.ok(words.length / all.length > 0.9, `mostly not words: ${r.stdout}`);
  // Common function words of English prose.
  const common = ['the', 'and', 'of', 'to', 'unto', 'that', 'a', 'in', 'he', 'is'];
  assert.ok(all.filter((w) => common.includes(w.toLowerCase().replace(/[^a-z]/g, ''))).length >= 3, r.stdout);
});
