import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel as loadEngine } from '../src/runtime/load.js';
import { ReferenceBackend } from '../src/backend/reference/index.js';
import { WasmBackend } from '../src/backend/wasm/index.js';
import type { Backend } from '../src/backend/backend.js';
import type { CausalLM } from '../src/model/forward.js';
import { Session } from '../src/runtime/session.js';
import { DecodeBatcher } from '../src/runtime/batcher.js';
import { loadModel } from '../src/api/model.js';
import { DEFAULT_MODEL } from '../src/cli/common.js';
import { tinyFixture, maxAbsDiff, argmax, tokenSequence } from './helpers.js';
import { startServer, postJson, getJson } from './server-helpers.js';

const fx = await tinyFixture(3);
after(() => fx.cleanup());

interface Stream {
  /** Decoded alone, one step per forward pass. */
  alone: Session;
  /** Decoded in batched passes with the other streams. */
  batched: Session;
  /** The next id to feed both. */
  next: number;
  /** The step at which the stream joins the batch, and how many steps it runs. */
  join: number;
  steps: number;
}

/**
 * 8 streams at different positions (some past the sliding window W, so their rings have wrapped;
 * some joining or leaving mid-way) decoded greedily, batched and alone: every step's logits must
 * agree to 1e-4 and the greedy tokens must be identical.
 */
function checkBatchedDecode(model: CausalLM, prompts: number[], maxBatch = 8): { worst: number; passes: number; maxRows: number } {
  const V = model.vocabSize;
  const hi = Math.min(V, 262000);
  const joins = [0, 0, 0, 2, 0, 3, 1, 5];
  const stepsOf = [8, 6, 10, 7, 8, 6, 9, 4];
  const streams: Stream[] = prompts.map((n, i) => {
    const ids = tokenSequence(n, 100 + i, 5, hi);
    const ctx = n + 32;
    const alone = new Session(model, { contextLength: ctx, prefillBatch: 7 });
    const logits = alone.prefill(ids);
    return { alone, batched: twin(alone), next: argmax(logits), join: joins[i], steps: stepsOf[i] };
  });
  let worst = 0;
  let passes = 0;
  let maxRows = 0;
  for (let step = 0; streams.some((s) => s.steps > 0); step++) {
    const live = streams.filter((s) => s.join <= step && s.steps > 0);
    if (live.length === 0) continue;
    const ids = live.map((s) => s.next);
    for (let i = 0; i < live.length; i += maxBatch) {
      const part = live.slice(i, i + maxBatch);
      const got = Session.stepAll(
        part.map((s) => s.batched),
        ids.slice(i, i + maxBatch),
      );
      passes++;
      maxRows = Math.max(maxRows, part.length);
      part.forEach((s, j) => {
        const want = s.alone.step(s.next);
        const d = maxAbsDiff(got[j], want);
        worst = Math.max(worst, d);
        assert.ok(d <= 1e-4, `stream ${streams.indexOf(s)} at position ${s.alone.position - 1}: max |Δlogit| ${d}`);
        const a = argmax(want);
        assert.equal(argmax(got[j]), a, `stream ${streams.indexOf(s)}: the greedy token differs at position ${s.alone.position - 1}`);
        assert.equal(s.batched.position, s.alone.position);
        s.next = a;
        s.steps--;
      });
    }
  }
  for (const s of streams) {
    assert.deepEqual(s.batched.tokens, s.alone.tokens);
    s.alone.dispose();
    s.batched.dispose();
  }
  return { worst, passes, maxRows };
}

/** A second session holding the same tokens as `s` (its KV cache copied: prefilled once, not twice). */
function twin(s: Session): Session {
  const t = new Session(s.model, { contextLength: s.contextLength, prefillBatch: s.prefillBatch });
  s.cache.layers.forEach((c, l) => {
    t.cache.layers[l].k.set(c.k);
    t.cache.layers[l].v.set(c.v);
  });
  t.cache.length = s.cache.length;
  (t as unknown as { ids: number[] }).ids = s.tokens;
  return t;
}

const backends: [string, () => Backend][] = [
  ['reference', () => new ReferenceBackend()],
  ['wasm', () => new WasmBackend({ threads: 2 })],
];

for (const [name, make] of backends) {
  test(`${name}: batched decode of 8 sessions equals each alone (tiny fixture, window 16)`, () => {
    const backend = make();
    try {
      const { model } = loadEngine(fx.dir, backend, { tokenizer: false });
      const W = model.cfg.slidingWindow;
      // Up to three windows: the rings of sliding layers have wrapped several times.
      const r = checkBatchedDecode(model, [1, 3, W - 1, W, W + 1, 2 * W + 5, 3 * W + 2, W / 2]);
      assert.equal(r.maxRows, 8, 'some pass carried all 8 sessions');
    } finally {
      backend.dispose?.();
    }
  });

  test(`${name}: batched decode equals each alone on the demo model (window 128), in passes of at most 3`, () => {
    const backend = make();
    try {
      const { model } = loadEngine(DEFAULT_MODEL, backend, { tokenizer: false });
      assert.equal(model.cfg.slidingWindow, 128);
      const r = checkBatchedDecode(model, [1, 3, 127, 128, 129, 5, 2, 64], 3);
      assert.equal(r.maxRows, 3);
    } finally {
      backend.dispose?.();
    }
  });
}

test('one-segment forward keeps the observer: every activation point, at the segment position', () => {
  const backend = new ReferenceBackend();
  const { model } = loadEngine(fx.dir, backend, { tokenizer: false });
  const s = new Session(model, { contextLength: 64 });
  s.prefill(tokenSequence(5, 1));
  const seen: string[] = [];
  s.step(17, (layer, point, _d, rows, _c, pos0) => {
    assert.equal(rows, 1);
    assert.equal(pos0, 5);
    seen.push(`${layer}:${point}`);
  });
  assert.ok(seen.includes('0:embed') && seen.includes(`${model.cfg.numLayers - 1}:logits`) && seen.includes('3:attn'));
  assert.equal(seen.length, 1 + 17 * model.cfg.numLayers + 2);
  const other = new Session(model, { contextLength: 64 });
  other.prefill([2, 9]);
  assert.throws(
    () => model.forwardSegments([{ ids: [1], pos0: 6, cache: s.cache }, { ids: [1], pos0: 2, cache: other.cache }], { logits: 'last', qChunk: 32, observer: () => {} }),
    /one segment/,
  );
});

test('a session without room is refused alone; the others in its pass go on', async () => {
  const backend = new ReferenceBackend();
  const { model } = loadEngine(fx.dir, backend, { tokenizer: false });
  const batcher = new DecodeBatcher();
  const full = new Session(model, { contextLength: 3, batcher });
  const ok = new Session(model, { contextLength: 64, batcher });
  const alone = new Session(model, { contextLength: 64 });
  full.prefill([2, 5, 6]);
  ok.prefill([2, 7]);
  alone.prefill([2, 7]);
  const [a, b] = await Promise.allSettled([batcher.step(full, 9), batcher.step(ok, 9)]);
  assert.equal(a.status, 'rejected');
  assert.match(String((a as PromiseRejectedResult).reason.message), /context full/);
  assert.equal(b.status, 'fulfilled');
  assert.ok(maxAbsDiff((b as PromiseFulfilledResult<Float32Array>).value, alone.step(9)) <= 1e-5);
  assert.equal(batcher.stats.passes, 1);
});

for (const backend of ['wasm'] as const) {
  test(`${backend}: 8 concurrent streams through the library batch their decode steps and give the same text as without batching`, async () => {
    const prompts = ['Once upon a time', 'The cat', 'In the morning the', 'She said', 'A', 'Tomorrow we will', 'The king and the', 'Why'];
    const opts = { backend, threads: 2, parallel: 8 } as const;
    const run = async (batchDecode: boolean) => {
      const model = await loadModel(DEFAULT_MODEL, { ...opts, batchDecode });
      try {
        // Half start now; the rest join while the first ones decode.
        const first = prompts.slice(0, 4).map((p, i) => model.complete(p, { maxTokens: 10 + 3 * i, temperature: 0 }));
        await new Promise((r) => setTimeout(r, 20));
        const rest = prompts.slice(4).map((p, i) => model.complete(p, { maxTokens: 14 + i, temperature: 0 }));
        const results = await Promise.all([...first, ...rest]);
        return { ids: results.map((r) => r.tokenIds), stats: model.batcher?.stats ?? null };
      } finally {
        model.dispose();
      }
    };
    const plain = await run(false);
    const batched = await run(true);
    assert.equal(plain.stats, null);
    assert.deepEqual(batched.ids, plain.ids);
    const st = batched.stats!;
    // A step follows every sampled token but the last of each request.
    assert.equal(st.tokens, plain.ids.reduce((n, ids) => n + ids.length - 1, 0), 'every decode step went through the batcher');
    assert.ok(st.tokensPerPass > 2, `tokens per pass ${st.tokensPerPass}`);
    assert.ok(st.maxTokensPerPass >= 6, `at most ${st.maxTokensPerPass} tokens in one pass`);
  });
}

test('lutra serve --no-batch: each decode step in a pass of its own; /health says so, and the answers are the same', async () => {
  const servers = [await startServer(['--parallel', '2', '--no-batch']), await startServer(['--parallel', '2'])];
  try {
    const answers = [];
    for (const s of servers) {
      const body = (p: string) => ({ prompt: p, max_tokens: 12 });
      const [a, b] = await Promise.all([postJson(`${s.url}/v1/completions`, body('The sea')), postJson(`${s.url}/v1/completions`, body('A king'))]);
      answers.push([a.json.choices[0].text, b.json.choices[0].text]);
    }
    assert.deepEqual(answers[0], answers[1]);
    assert.deepEqual((await getJson(`${servers[0].url}/health`)).decode, { batched: false });
    const d = (await getJson(`${servers[1].url}/health`)).decode;
    assert.equal(d.batched, true);
    assert.ok(d.tokens > 0 && d.passes > 0 && d.passes <= d.tokens, JSON.stringify(d));
  } finally {
    for (const s of servers) assert.equal(await s.stop(), 0);
  }
});

test('sessions under the fp16 overflow watch step alone (the watch names one position per op)', async () => {
  const model = await loadModel(DEFAULT_MODEL, { threads: 2, parallel: 2, numerics: 'fp16' });
  try {
    const [a, b] = await Promise.all([model.complete('The sea', { maxTokens: 6 }), model.complete('A king', { maxTokens: 6 })]);
    const st = model.batcher!.stats;
    assert.equal(st.tokens, a.tokenIds.length - 1 + b.tokenIds.length - 1);
    assert.equal(st.maxTokensPerPass, 1);
  } finally {
    model.dispose();
  }
});
