// The library API on the demo model: outputs against the engine driven by hand, streams, stop
// strings, AbortSignal, chat sessions that keep their cache, concurrent sessions, log-probs,
// error codes, and memory that comes back when sessions are dropped.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel, LutraError, type LutraModel } from '../src/index.js';
import { DEFAULT_MODEL } from '../src/cli/common.js';
import { Session } from '../src/runtime/session.js';
import { logSoftmax } from '../src/verify/metrics.js';
import { argmax } from './helpers.js';
import type { WasmBackend } from '../src/backend/wasm/index.js';

let model: LutraModel;
before(async () => {
  model = await loadModel(DEFAULT_MODEL, { threads: 2, parallel: 3 });
});
after(() => model?.dispose());

/** Greedy decoding driven by hand on the engine: prefill, then argmax and step. */
function greedyByHand(ids: number[], n: number): number[] {
  const s = new Session(model.engine, { contextLength: ids.length + n });
  let logits = s.prefill(ids);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const id = argmax(logits);
    out.push(id);
    if (model.tokenizer.stopIds.has(id)) break;
    if (i + 1 < n) logits = s.step(id);
  }
  s.dispose();
  return out;
}

test('complete(): greedy tokens equal the engine driven by hand; the stream joins to the same text', async () => {
  const prompt = 'In the beginning';
  const r = await model.complete(prompt, { maxTokens: 40 });
  assert.deepEqual(r.tokenIds, greedyByHand(model.tokenize(prompt), 40));
  assert.equal(r.finishReason, 'length');
  assert.equal(r.stoppedBy, 'max-tokens');
  assert.equal(r.text, model.detokenize(r.tokenIds));
  assert.equal(r.usage.promptTokens, model.tokenize(prompt).length);
  assert.equal(r.usage.completionTokens, 40);
  let text = '';
  const ids: number[] = [];
  let last = null;
  for await (const c of model.stream(prompt, { maxTokens: 40 })) {
    text += c.text;
    ids.push(...c.tokenIds);
    last = c.finishReason;
  }
  assert.equal(text, r.text);
  assert.deepEqual(ids, r.tokenIds);
  assert.equal(last, 'length');
});

test('chat(): the template applied, stops at <end_of_turn>, text without special tokens', async () => {
  const messages = [{ role: 'user' as const, content: 'Tell me a fortune.' }];
  const r = await model.chat(messages, { maxTokens: 200 });
  const ids = model.chatIds(messages);
  assert.deepEqual(ids, model.tokenize(model.applyChatTemplate(messages)));
  assert.deepEqual(r.tokenIds, greedyByHand(ids, 200));
  assert.equal(r.stoppedBy, 'stop-token');
  assert.equal(model.tokenizer.stopIds.has(r.tokenIds[r.tokenIds.length - 1]), true);
  assert.equal(r.text, model.detokenize(r.tokenIds));
  assert.ok(r.text.length > 0);
});

test('stop strings: the text ends before the first one, and no streamed piece shows any of it', async () => {
  const full = await model.complete('And the LORD spake unto Moses, saying,', { maxTokens: 40 });
  const words = full.text.split(' ');
  const stop = words.slice(4, 6).join(' ');
  const cut = full.text.indexOf(stop);
  assert.ok(cut > 0, `"${stop}" occurs in "${full.text}"`);
  let streamed = '';
  let finish = null;
  for await (const c of model.stream('And the LORD spake unto Moses, saying,', { maxTokens: 40, stop: ['zzz-never', stop] })) {
    streamed += c.text;
    finish = c.finishReason;
  }
  assert.equal(streamed, full.text.slice(0, cut));
  assert.equal(finish, 'stop');
  const r = await model.complete('And the LORD spake unto Moses, saying,', { maxTokens: 40, stop });
  assert.equal(r.text, full.text.slice(0, cut));
  assert.equal(r.stoppedBy, 'stop-string');
});

test('AbortSignal stops within one token and leaves the model usable', async () => {
  const ctrl = new AbortController();
  let chunks = 0;
  let finish = null;
  const before = await model.complete('In the beginning', { maxTokens: 20 });
  for await (const c of model.stream('In the beginning', { maxTokens: 500, signal: ctrl.signal })) {
    if (c.tokenIds.length > 0 && ++chunks === 5) ctrl.abort();
    finish = c.finishReason;
  }
  assert.equal(finish, 'abort');
  assert.equal(chunks, 5, 'no token after the abort');
  const pre = new AbortController();
  pre.abort();
  const r = await model.complete('In the beginning', { maxTokens: 20, signal: pre.signal });
  assert.equal(r.finishReason, 'abort');
  assert.equal(r.usage.completionTokens, 0);
  assert.deepEqual((await model.complete('In the beginning', { maxTokens: 20 })).tokenIds, before.tokenIds);
});

test('a chat session keeps its cache: a follow-up prefills only the new tokens and answers as a fresh run would', async () => {
  const chat = model.createChatSession({ system: 'Answer briefly.' });
  const a = await chat.send('Tell me a fortune.', { maxTokens: 30 });
  assert.equal(a.usage.cachedTokens, 0);
  const b = await chat.send('Another one?', { maxTokens: 30 });
  const ids = model.chatIds(chat.messages.slice(0, -1));
  assert.equal(b.usage.promptTokens, ids.length);
  assert.ok(b.usage.cachedTokens > a.usage.promptTokens, `reused ${b.usage.cachedTokens} tokens`);
  assert.equal(b.timings.promptEvaluated, ids.length - b.usage.cachedTokens);
  // The same conversation from scratch gives the same answer.
  const fresh = await model.chat(chat.messages.slice(0, -1), { maxTokens: 30 });
  assert.deepEqual(b.tokenIds, fresh.tokenIds);
  assert.equal(chat.messages.length, 5);
  chat.reset();
  assert.deepEqual(chat.messages, [{ role: 'system', content: 'Answer briefly.' }]);
  chat.dispose();
});

test('several sessions over one model generate at once, each as it would alone', async () => {
  const prompts = ['The LORD is my shepherd;', 'And Jesus said unto them,', 'Thus saith the LORD of hosts,'];
  const alone = [];
  for (const p of prompts) alone.push((await model.complete(p, { maxTokens: 24 })).tokenIds);
  let interleaved = 0;
  let lastPrompt = -1;
  const together = await Promise.all(
    prompts.map(async (p, i) => {
      const ids: number[] = [];
      for await (const c of model.stream(p, { maxTokens: 24 })) {
        if (lastPrompt !== -1 && lastPrompt !== i) interleaved++;
        lastPrompt = i;
        ids.push(...c.tokenIds);
      }
      return ids;
    }),
  );
  assert.deepEqual(together, alone);
  assert.ok(interleaved > 10, `the streams took turns (${interleaved} switches)`);
  assert.ok(model.pool.sessions <= 3);
});

test('a long prefill does not stall other streams: they get tokens between its batches', async () => {
  const long = 'and the sea '.repeat(250);
  assert.ok(model.tokenize(long).length > 600);
  const ctrl = new AbortController();
  const times: number[] = [];
  let started = 0;
  let ended = 0;
  let prefillMs = 0;
  const other = (async () => {
    for await (const c of model.stream('In the beginning', { maxTokens: 600, signal: ctrl.signal })) {
      times.push(performance.now());
      if (times.length === 3) {
        started = performance.now();
        model.complete(long, { maxTokens: 1 }).then((r) => {
          ended = performance.now();
          prefillMs = r.timings.prefillMs;
          ctrl.abort();
        });
      }
    }
  })();
  await other;
  const during = times.filter((t) => t > started && t < ended).length;
  assert.ok(prefillMs > 0);
  assert.ok(during >= 5, `the other stream got ${during} tokens during a ${prefillMs.toFixed(0)} ms prefill of ${model.tokenize(long).length} tokens`);
});

test('tokenize / detokenize round-trip; logProbs equal token-by-token decoding', async () => {
  const text = 'Blessed are the meek: for they shall inherit the earth.';
  const ids = model.tokenize(text);
  assert.equal(ids[0], model.tokenizer.bosId);
  assert.equal(model.detokenize(ids), text);
  assert.deepEqual(model.tokenize(text, { bos: false }), ids.slice(1));
  const r = await model.logProbs(text, { topK: 3 });
  assert.deepEqual(r.tokenIds, ids);
  assert.equal(r.logProbs.length, ids.length - 1);
  // Independently: feed one token at a time (decode steps, not the batched prefill) and score,
  // with the model's KV cache type.
  const s = new Session(model.engine, { contextLength: ids.length, kvType: model.info.kvCache });
  let logits = s.prefill([ids[0]]);
  for (let i = 1; i < ids.length; i++) {
    const lp = logSoftmax(logits);
    assert.ok(Math.abs(lp[ids[i]] - r.logProbs[i - 1]) < 1e-4, `position ${i}: ${lp[ids[i]]} vs ${r.logProbs[i - 1]}`);
    assert.equal(r.top![i - 1][0].id, argmax(logits));
    if (i < ids.length - 1) logits = s.step(ids[i]);
  }
  s.dispose();
  assert.ok(Math.abs(r.nll + r.logProbs.reduce((a, b) => a + b, 0)) < 1e-9);
  assert.ok(r.perplexity > 1 && r.perplexity < 8192);
  for (const t of r.top!) assert.ok(t[0].logProb >= t[1].logProb && t[1].logProb >= t[2].logProb);
});

test('errors carry stable codes and name the option', async () => {
  const code = async (p: Promise<unknown>, want: string, msg: RegExp) => {
    await assert.rejects(p, (e: unknown) => {
      assert.ok(e instanceof LutraError, String(e));
      assert.equal(e.code, want);
      assert.match(e.message, msg);
      return true;
    });
  };
  await code(model.complete('hi', { temperature: -1 }), 'invalid_argument', /^temperature -1 is out of range/);
  await code(model.complete('hi', { maxTokens: 0 }), 'invalid_argument', /^maxTokens 0/);
  // A misspelt option is not ignored (it would run 256 tokens), nor is a signal that is none.
  await code(model.complete('hi', { maxToken: 2 } as never), 'invalid_argument', /^completion options: unknown option "maxToken"; did you mean maxTokens\?/);
  await code(model.chat([{ role: 'user', content: 'x' }], { temprature: 0 } as never), 'invalid_argument', /^chat options: unknown option "temprature"; did you mean temperature\?/);
  await code(model.complete('hi', { signal: 5 as never }), 'invalid_argument', /^signal: expected an AbortSignal/);
  await code(model.complete('hi', { signal: { aborted: true } as never }), 'invalid_argument', /^signal: expected an AbortSignal/);
  await code(model.complete('hi', { temperature: 'hot' as never }), 'invalid_argument', /^temperature "hot": not a number/);
  await code(loadModel(DEFAULT_MODEL, { thread: 1 } as never), 'invalid_argument', /^loadModel options: unknown option "thread"; did you mean threads\?/);
  await code(loadModel(DEFAULT_MODEL, { repack: 'no' as never }), 'invalid_argument', /^repack "no": expected true or false$/);
  await code(model.complete('the sea '.repeat(1000)), 'context_length_exceeded', /context holds 1024/);
  await code(model.chat([{ role: 'robot' as 'user', content: 'x' }]), 'invalid_argument', /messages\[0\]\.role/);
  await code(loadModel('/nonexistent/model'), 'invalid_model', /model directory not found/);
  await code(loadModel(DEFAULT_MODEL, { contextLength: 5000 }), 'invalid_argument', /contextLength 5000/);
  const m = await loadModel(DEFAULT_MODEL, { backend: 'reference' });
  m.dispose();
  assert.throws(() => m.stream('hi'), (e: unknown) => e instanceof LutraError && e.code === 'disposed');
});

test('memory comes back: 500 sessions created and disposed leave the engine where one left it', async () => {
  const m = await loadModel(DEFAULT_MODEL, { threads: 1 });
  const arena = (m.engine.backend as WasmBackend).arena;
  const cycle = async () => {
    const chat = m.createChatSession();
    await chat.send('Hi', { maxTokens: 2 });
    chat.dispose();
  };
  await cycle();
  global.gc?.();
  const used1 = arena.used;
  const rss1 = process.memoryUsage().rss;
  for (let i = 0; i < 500; i++) await cycle();
  global.gc?.();
  assert.equal(arena.used, used1, 'the wasm memory high-water mark did not move');
  const grew = process.memoryUsage().rss - rss1;
  // Margin: 32 MiB for JS heap noise; leaking the caches would add 500 × 3.6 MiB.
  assert.ok(grew < 32 * 2 ** 20, `RSS grew by ${(grew / 2 ** 20).toFixed(1)} MiB over 500 sessions (one cache is ${(m.info.kvCacheBytes / 2 ** 20).toFixed(1)} MiB)`);
  m.dispose();
});
