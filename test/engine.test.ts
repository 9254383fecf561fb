import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../src/runtime/load.js';
import { ReferenceBackend } from '../src/backend/reference/index.js';
import { Session } from '../src/runtime/session.js';
import { tinyFixture, maxAbsDiff, tokenSequence } from './helpers.js';

const fx = await tinyFixture();
const { model } = loadModel(fx.dir, new ReferenceBackend(), { tokenizer: false });
const V = model.vocabSize;
const W = model.cfg.slidingWindow;
// 3.5 windows: the ring wraps several times and a global layer sits between sliding ones.
const ids = tokenSequence(Math.round(3.5 * W) + 3, 7);

test('the tiny fixture has the shape the oracle needs', () => {
  assert.ok(model.cfg.numLayers >= 7);
  assert.ok(W <= 32);
  assert.equal(Math.sqrt(model.cfg.hiddenSize) % 1, 0);
  assert.ok(model.cfg.numHeads > model.cfg.numKvHeads);
  assert.equal(model.cfg.layerTypes[5], 'full_attention');
  assert.equal(model.cfg.layerTypes[6], 'sliding_attention');
});

test('token-by-token decode with ring buffers equals one batched prefill with the banded mask', () => {
  // Batched: every key is in the batch, the sliding mask is applied over the whole sequence.
  const full = new Session(model, { contextLength: 256, prefillBatch: ids.length, qChunk: ids.length });
  const all = full.prefill(ids, { all: true });
  // Decode: sliding layers keep W slots and wrap.
  const dec = new Session(model, { contextLength: 256 });
  assert.ok(dec.cache.layers.some((c) => c.ring && c.capacity === W));
  let worst = 0;
  for (let t = 0; t < ids.length; t++) {
    const logits = dec.step(ids[t]);
    worst = Math.max(worst, maxAbsDiff(logits, all.subarray(t * V, (t + 1) * V)));
  }
  assert.ok(worst <= 1e-4, `max |Δlogit| ${worst}`);
});

test('prefill in batches smaller than the window, then decode, matches too', () => {
  const ref = new Session(model, { contextLength: 256, prefillBatch: ids.length });
  const all = ref.prefill(ids, { all: true });
  const s = new Session(model, { contextLength: 256, prefillBatch: 5, qChunk: 3 });
  const head = ids.length - 6;
  const logitsHead = s.prefill(ids.slice(0, head), { all: true });
  let worst = maxAbsDiff(logitsHead, all.subarray(0, head * V));
  for (let t = head; t < ids.length; t++) worst = Math.max(worst, maxAbsDiff(s.step(ids[t]), all.subarray(t * V, (t + 1) * V)));
  assert.ok(worst <= 1e-4, `max |Δlogit| ${worst}`);
});

test('Q-chunked attention equals unchunked', () => {
  const a = new Session(model, { contextLength: 256, prefillBatch: ids.length, qChunk: ids.length }).prefill(ids, { all: true });
  for (const qChunk of [1, 7, 16]) {
    const b = new Session(model, { contextLength: 256, prefillBatch: ids.length, qChunk }).prefill(ids, { all: true });
    assert.ok(maxAbsDiff(a, b) <= 1e-5, `qChunk ${qChunk}: ${maxAbsDiff(a, b)}`);
  }
});

test('a token far in the past still reaches the output through the global layer', () => {
  const s1 = new Session(model, { contextLength: 256 }).prefill(ids);
  const other = [...ids];
  other[3] = (other[3] + 12345) % 262000;
  const s2 = new Session(model, { contextLength: 256 }).prefill(other);
  assert.ok(maxAbsDiff(s1, s2) > 1e-3, 'a token far back should still reach the output through the global layer');
});

test('context overflow is a clear error', () => {
  const s = new Session(model, { contextLength: 8 });
  assert.throws(() => s.prefill(ids.slice(0, 9)), /context full: 0 \+ 9 tokens exceed the context length 8/);
});

test('next-token distributions are peaked (top-1 probability often above 0.3)', () => {
  const all = new Session(model, { contextLength: 256, prefillBatch: ids.length }).prefill(ids, { all: true });
  let above = 0;
  for (let t = 0; t < ids.length; t++) {
    const row = all.subarray(t * V, (t + 1) * V);
    let m = -Infinity;
    for (const x of row) m = Math.max(m, x);
    let z = 0;
    for (const x of row) z += Math.exp(x - m);
    if (1 / z > 0.3) above++;
  }
  assert.ok(above / ids.length > 0.4, `only ${above}/${ids.length} positions have top-1 > 0.3`);
});

test.after(() => fx.cleanup());

test('truncate steps back within the ring slack and continues exactly', () => {
  const full = new Session(model, { contextLength: 256, prefillBatch: ids.length }).prefill(ids, { all: true });
  const s = new Session(model, { contextLength: 256, rollbackSlack: 8 });
  s.prefill(ids.slice(0, 40));
  assert.equal(s.truncate(31), true); // drop 9 = slack + 1
  assert.equal(s.position, 31);
  let worst = 0;
  for (let t = 31; t < 45; t++) worst = Math.max(worst, maxAbsDiff(s.step(ids[t]), full.subarray(t * V, (t + 1) * V)));
  assert.ok(worst <= 1e-4, `max |Δlogit| ${worst}`);
  // Without slack the ring cannot step back past one token.
  const tight = new Session(model, { contextLength: 256 });
  tight.prefill(ids.slice(0, 40));
  assert.equal(tight.truncate(35), false);
  assert.equal(tight.position, 40);
});
