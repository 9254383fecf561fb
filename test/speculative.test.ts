// Speculative decoding: greedy output equals plain greedy output token for token for every draft
// source (drafts mostly kept, mostly rejected, and rolled back past the sliding window); the
// speculative-sampling rule reproduces the target distribution (a chi-square test that the
// always-accept rule fails); the draft sources and the option's errors.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { spawnSync } from 'node:child_process';
import { createServer } from '../src/server/server.js';
import { loadModel, LutraError, type LutraModel } from '../src/index.js';
import { DEFAULT_MODEL } from '../src/cli/common.js';
import { Session } from '../src/runtime/session.js';
import { Sampler, probabilityOf, type TokenDistribution } from '../src/runtime/sampler.js';
import { generate } from '../src/runtime/generate.js';
import { acceptDrafts, parseSpeculative, residual, type AcceptRule } from '../src/runtime/speculative.js';
import { LookupDraft, SuffixIndex, type DraftSource } from '../src/runtime/drafts.js';
import { buildPlan } from '../src/quant/plan.js';
import { convert } from '../src/quant/convert.js';
import { tinyFixture } from './helpers.js';

let model: LutraModel;
let int4: LutraModel;
let root: string;
const prompts: string[] = readFileSync(join(DEFAULT_MODEL, '..', '..', 'bench', 'prompts.jsonl'), 'utf8')
  .trim()
  .split('\n')
  .map((l) => JSON.parse(l).prompt as string);

before(async () => {
  model = await loadModel(DEFAULT_MODEL, { threads: 2 });
  // The int4 package of the same model: a self-draft that agrees often but not always.
  root = mkdtempSync(join(tmpdir(), 'lutra-spec-'));
  const out = join(root, 'demo-int4');
  await convert({ src: DEFAULT_MODEL, out, plan: buildPlan({ quant: ['all=int4:32'], weightThreshold: 0 }), command: 'test' });
  int4 = await loadModel(out, { threads: 2 });
});
after(() => {
  model?.dispose();
  int4?.dispose();
  if (root) rmSync(root, { recursive: true, force: true });
});

const sources = () => [
  { name: 'lookup', spec: { source: 'lookup' as const, adaptive: false, maxDraft: 6 } },
  { name: 'suffix', spec: { source: 'suffix' as const, adaptive: false, maxDraft: 6 } },
  { name: 'draft int4', spec: { source: 'draft' as const, draft: int4, adaptive: false, maxDraft: 4 } },
  { name: 'lookup adaptive', spec: 'lookup' as const },
];

test('greedy speculative output equals plain greedy output token for token, for every draft source, over 24 prompts', async () => {
  assert.ok(prompts.length >= 24);
  const plain = new Map<string, number[]>();
  for (const p of prompts.slice(0, 24)) plain.set(p, (await model.complete(p, { maxTokens: 40 })).tokenIds);
  let mostlyRejected = 0;
  for (const { name, spec } of sources()) {
    let drafted = 0;
    for (const p of prompts.slice(0, 24)) {
      const r = await model.complete(p, { maxTokens: 40, speculative: spec });
      assert.deepEqual(r.tokenIds, plain.get(p), `${name}: ${JSON.stringify(p)}`);
      assert.ok(r.speculative, 'the result carries the counters');
      assert.equal(r.speculative.source, name.split(' ')[0]);
      drafted += r.speculative.drafted;
      if (r.speculative.drafted >= 6 && r.speculative.acceptanceRate < 0.5) mostlyRejected++;
      assert.ok(r.speculative.accepted <= r.speculative.drafted);
    }
    if (name !== 'lookup adaptive') assert.ok(drafted > 100, `${name} drafted ${drafted} tokens`);
  }
  assert.ok(mostlyRejected >= 5, `prompts whose drafts were mostly rejected: ${mostlyRejected}`);
});

test('rollback past the sliding window: 240 greedy tokens with drafts equal plain decoding (window 128)', async () => {
  assert.equal(model.info.slidingWindow, 128);
  for (const p of ['The LORD is my shepherd;', 'And it came to pass, when']) {
    const plain = await model.complete(p, { maxTokens: 240 });
    for (const spec of [{ source: 'lookup' as const, adaptive: false, maxDraft: 8 }, { source: 'draft' as const, draft: int4, adaptive: false, maxDraft: 6 }]) {
      const r = await model.complete(p, { maxTokens: 240, speculative: spec });
      assert.equal(r.tokenIds.length, plain.tokenIds.length);
      assert.ok(r.tokenIds.length > 200 || r.stoppedBy === 'stop-token');
      assert.deepEqual(r.tokenIds, plain.tokenIds, `${spec.source}: ${p}`);
      assert.ok(r.speculative!.drafted > 50, `${spec.source} drafted ${r.speculative!.drafted} tokens`);
      if (spec.source === 'lookup') assert.ok(r.speculative!.drafted > r.speculative!.accepted, 'some drafts were rolled back');
    }
  }
});

test('a chat session keeps working after speculative turns (the cache holds exactly the history)', async () => {
  const a = model.createChatSession();
  const b = model.createChatSession();
  try {
    for (const q of ['Say the first verse of Genesis.', 'Now say it again.']) {
      const x = await a.send(q, { maxTokens: 30 });
      const y = await b.send(q, { maxTokens: 30, speculative: 'suffix' });
      assert.deepEqual(y.tokenIds, x.tokenIds);
    }
  } finally {
    a.dispose();
    b.dispose();
  }
});

test('suffix decoding drafts from earlier outputs of the same model', async () => {
  const p = 'Blessed are the meek: for they';
  const first = await model.complete(p, { maxTokens: 40, speculative: { source: 'suffix', adaptive: false } });
  const again = await model.complete(p, { maxTokens: 40, speculative: { source: 'suffix', adaptive: false } });
  assert.deepEqual(again.tokenIds, first.tokenIds);
  assert.ok(again.speculative!.acceptanceRate > 0.9, `acceptance on a repeated request: ${again.speculative!.acceptanceRate}`);
  assert.ok(again.speculative!.tokensPerPass > 2);
});

/** Chi-square statistic of observed counts against expected probabilities. */
function chiSquare(counts: Map<string, number>, expected: Map<string, number>, n: number): number {
  let x2 = 0;
  for (const [cell, p] of expected) x2 += ((counts.get(cell) ?? 0) - n * p) ** 2 / (n * p);
  for (const cell of counts.keys()) if (!expected.has(cell)) return Infinity;
  return x2;
}

const dist = (ids: number[], weights: number[]): TokenDistribution => ({ ids, weights, total: weights.reduce((a, b) => a + b, 0) });
const always: AcceptRule = () => true;

test('the speculative-sampling rule gives the target distribution for a sampled draft (and always-accept does not)', () => {
  const p = dist([1, 2, 3, 4], [0.5, 0.3, 0.15, 0.05]);
  const q = dist([1, 2, 3, 5], [0.1, 0.2, 0.4, 0.3]); // token 5 impossible under p
  const expected = new Map(p.ids.map((id, i) => [String(id), p.weights[i]]));
  const run = (rule?: AcceptRule) => {
    const sampler = new Sampler({ temperature: 1, seed: 7 });
    const counts = new Map<string, number>();
    for (let i = 0; i < 20000; i++) {
      const x = sampler.draw(q);
      const { tokens } = acceptDrafts(() => p, [x], [q], sampler, rule);
      counts.set(String(tokens[0]), (counts.get(String(tokens[0])) ?? 0) + 1);
    }
    return chiSquare(counts, expected, 20000);
  };
  // 3 degrees of freedom: P(χ² > 16.27) = 0.001.
  assert.ok(run() < 16.27, `exact rule χ² ${run()}`);
  assert.ok(run(always) > 1000, 'always accepting gives the draft distribution');
  // The residual of a point mass is p without that token.
  assert.deepEqual(residual(p, null, 1).ids, [2, 3, 4]);
  assert.ok(Math.abs(probabilityOf(residual(p, null, 1), 2) - 0.6) < 1e-12);
});

test('speculative sampling on a fixture model: the first three tokens follow the target distribution (chi-square, 8 cells)', async () => {
  const fx = await tinyFixture(3);
  return (async () => {
    const m = await loadModel(fx.dir, { threads: 2 });
    try {
      // maxTokenId keeps the candidate sort small (random weights leave most of a 262k vocabulary within reach).
      const sampling = { temperature: 1, topK: 2, repetitionPenalty: 1.3, maxTokenId: 4096 };
      const prompt = [2, 1000, 2000, 3000, 4000];
      // Exact joint of (t1, t2, t3) from the engine: top-2 at every step.
      const s = new Session(m.engine, { rollbackSlack: 8 });
      const view = new Sampler(sampling);
      const distAfter = (ids: number[]) => {
        s.reset();
        return view.distribution(s.prefill(ids), ids);
      };
      const expected = new Map<string, number>();
      const d1 = distAfter(prompt);
      const drafts = new Map<number, number[]>();
      for (const t1 of d1.ids) {
        const d2 = distAfter([...prompt, t1]);
        // The draft for (t2, t3): the target's less likely t2, then its likelier t3.
        const x2 = d2.ids[1];
        drafts.set(t1, [x2, distAfter([...prompt, t1, x2]).ids[0]]);
        for (const t2 of d2.ids) {
          const d3 = distAfter([...prompt, t1, t2]);
          for (const t3 of d3.ids) expected.set(`${t1},${t2},${t3}`, probabilityOf(d1, t1) * probabilityOf(d2, t2) * probabilityOf(d3, t3));
        }
      }
      s.dispose();
      assert.equal(expected.size, 8);
      const fixed: DraftSource = {
        name: 'fixed',
        propose: (history) => {
          const ids = history.length === prompt.length + 1 ? drafts.get(history[prompt.length])! : [];
          return { ids, q: ids.map(() => null) };
        },
      };
      const session = new Session(m.engine, { rollbackSlack: 8 });
      const n = 3000;
      const counts = new Map<string, number>();
      let accepted = 0;
      for (let seed = 0; seed < n; seed++) {
        const g = generate(session, m.tokenizer, prompt, { ...sampling, seed, maxTokens: 4, speculative: { source: fixed, adaptive: false, maxDraft: 2 } });
        let r = await g.next();
        while (!r.done) r = await g.next();
        const key = r.value.tokenIds.slice(0, 3).join(',');
        counts.set(key, (counts.get(key) ?? 0) + 1);
        accepted += r.value.speculative!.accepted;
      }
      session.dispose();
      // 7 degrees of freedom: P(χ² > 24.32) = 0.001.
      const x2 = chiSquare(counts, expected, n);
      assert.ok(x2 < 24.32, `χ² ${x2.toFixed(2)} over ${JSON.stringify([...counts])} vs ${JSON.stringify([...expected])}`);
      assert.ok(accepted > n / 20 && accepted < 2 * n, `drafts accepted ${accepted}: the rule was exercised both ways`);

      // The same check on the verify step with the always-accept rule fails.
      const wrong = new Map<string, number>();
      const sampler = new Sampler({ ...sampling, seed: 1 });
      const d1Cache = d1;
      const dists = new Map<string, TokenDistribution>();
      const s2 = new Session(m.engine, { rollbackSlack: 8 });
      const after = (ids: number[]) => {
        const k = ids.join(',');
        if (!dists.has(k)) {
          s2.reset();
          dists.set(k, view.distribution(s2.prefill(ids), ids));
        }
        return dists.get(k)!;
      };
      for (let i = 0; i < n; i++) {
        const t1 = sampler.draw(d1Cache);
        const x = drafts.get(t1)!;
        const { tokens } = acceptDrafts((j) => after([...prompt, t1, ...x.slice(0, j)]), x, [null, null], sampler, always);
        const key = [t1, ...tokens].slice(0, 3).join(',');
        wrong.set(key, (wrong.get(key) ?? 0) + 1);
      }
      s2.dispose();
      const bad = chiSquare(wrong, expected, n);
      assert.ok(bad > 100, `always-accept χ² ${bad}`);
    } finally {
      m.dispose();
      fx.cleanup();
    }
  })();
});

test('prompt lookup proposes what followed the latest match of the last n-gram', () => {
  const l = new LookupDraft(3, 1);
  assert.deepEqual(l.propose([1, 2, 3, 4, 5, 9, 2, 3], 2).ids, [4, 5]);
  assert.deepEqual(l.propose([1, 2, 3, 4, 7, 2, 3, 5, 6, 2, 3], 3).ids, [5, 6, 2]);
  assert.deepEqual(l.propose([1, 2, 3], 4).ids, []);
  const index = new SuffixIndex(4);
  index.add([10, 11, 12, 13, 10, 11, 12, 14, 10, 11, 12, 14]);
  assert.equal(index.predict([10, 11, 12], 2), 14);
  assert.equal(index.predict([99, 12], 2), -1);
});

test('speculative option errors name the field', async () => {
  assert.equal(parseSpeculative(undefined), null);
  assert.equal(parseSpeculative('off'), null);
  assert.throws(() => parseSpeculative('ngram'), /^LutraError: speculative "ngram": expected "off", "lookup", "suffix" or \{ draft: model \}/);
  assert.throws(() => parseSpeculative({ source: 'lookup', maxDraft: 0 }), /speculative\.maxDraft 0: expected an integer in \[1, 32\]/);
  assert.throws(() => parseSpeculative({ source: 'draft' }), /speculative\.draft: expected a loaded lutra model/);
  await assert.rejects(model.complete('x', { speculative: 'bogus' as never }), LutraError);
  const fx = await tinyFixture(0);
  try {
    const other = await loadModel(fx.dir, { threads: 1, backend: 'reference' });
    try {
      await assert.rejects(model.complete('x', { speculative: { draft: other } }), /draft model's vocabulary has 262144 tokens, the model's 8192/);
    } finally {
      other.dispose();
    }
  } finally {
    fx.cleanup();
  }
});

test('server: the speculative request field, usage.speculative, and errors naming the field', async () => {
  const server = await createServer({ model, port: 0, speculative: 'off' });
  try {
    const post = (body: object) => fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const plain = (await (await post({ prompt: 'The LORD is my shepherd;', max_tokens: 24 })).json()) as { choices: { text: string }[]; usage: Record<string, unknown> };
    assert.equal(plain.usage.speculative, undefined);
    const r = await post({ prompt: 'The LORD is my shepherd;', max_tokens: 24, speculative: 'suffix' });
    assert.equal(r.status, 200);
    const body = (await r.json()) as { choices: { text: string }[]; usage: { speculative: { source: string; drafted: number; accepted: number; tokens_per_pass: number } } };
    assert.equal(body.choices[0].text, plain.choices[0].text);
    assert.equal(body.usage.speculative.source, 'suffix');
    assert.ok(body.usage.speculative.accepted <= body.usage.speculative.drafted);
    for (const [value, message] of [
      ['ngram', 'speculative: expected "off", "lookup", "suffix" or "draft", got "ngram"'],
      ['draft', 'speculative: "draft" needs a server started with --speculative draft:MODEL'],
    ]) {
      const bad = await post({ prompt: 'x', max_tokens: 2, speculative: value });
      assert.equal(bad.status, 400);
      const e = (await bad.json()) as { error: { message: string; param: string } };
      assert.equal(e.error.message, message);
      assert.equal(e.error.param, 'speculative');
    }
  } finally {
    await server.close(1000);
  }
});

test('lutra generate --speculative: the stats line reports the counters; a bad value is a one-line error', () => {
  const cli = resolve('dist/src/cli/main.js');
  const ok = spawnSync(process.execPath, [cli, 'generate', '--raw', '--prompt', 'The LORD is my shepherd; The LORD is', '--max-tokens', '24', '--threads', '1', '--speculative', 'lookup'], { encoding: 'utf8' });
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stderr, /speculative lookup: \d+\/\d+ drafted tokens accepted \([\d.]+ %\), [\d.]+ tokens per pass over \d+ passes/);
  const bad = spawnSync(process.execPath, [cli, 'generate', '--prompt', 'x', '--speculative', 'ngram'], { encoding: 'utf8' });
  assert.equal(bad.status, 1);
  assert.equal(bad.stderr.trim(), 'lutra: error: --speculative ngram: expected lookup, suffix, draft:MODEL or off');
});

test('reference backend: greedy speculative output equals plain greedy output (lookup and a draft model)', async () => {
  const ref = await loadModel(DEFAULT_MODEL, { backend: 'reference' });
  try {
    const p = 'The LORD is my shepherd; The LORD is';
    const plain = await ref.complete(p, { maxTokens: 16 });
    for (const spec of [{ source: 'lookup' as const, adaptive: false, maxDraft: 4 }, { source: 'draft' as const, draft: int4, adaptive: false, maxDraft: 3 }]) {
      const r = await ref.complete(p, { maxTokens: 16, speculative: spec });
      assert.deepEqual(r.tokenIds, plain.tokenIds, spec.source);
      assert.ok(r.speculative!.drafted > 0);
    }
  } finally {
    ref.dispose();
  }
});

test('with the copy adapter (unmerged LoRA) the demo model copies: prompt-lookup drafts are mostly kept, and the output equals plain greedy output', async () => {
  const copier = await loadModel(DEFAULT_MODEL, { threads: 2, lora: join(DEFAULT_MODEL, '..', 'demo-copy-lora') });
  try {
    // Held-out text (never trained on, by the model or the adapter), asked for again.
    const held = readFileSync(join(DEFAULT_MODEL, 'heldout-sample.txt'), 'utf8').split('\n\n').filter((d) => d.length >= 150 && d.length <= 420);
    let drafted = 0;
    let accepted = 0;
    for (const passage of held.slice(0, 4)) {
      const p = `${passage}\n\nRepeat the passage above word for word.\n\n`;
      const plain = await copier.complete(p, { maxTokens: 32 });
      const r = await copier.complete(p, { maxTokens: 32, speculative: { source: 'lookup', adaptive: false, maxDraft: 6 } });
      assert.deepEqual(r.tokenIds, plain.tokenIds, passage);
      drafted += r.speculative!.drafted;
      accepted += r.speculative!.accepted;
    }
    assert.ok(drafted > 40 && accepted / drafted > 0.6, `accepted ${accepted} of ${drafted} drafted tokens`);
  } finally {
    copier.dispose();
  }
});
