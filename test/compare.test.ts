import { exportGguf } from '../src/io/gguf-export.js';
// `lutra compare`: metrics by hand, dataset parsing, gates, and whole comparisons of
// tiny fixtures through the API (lutra and llama.cpp runners) and through the CLI.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SafetensorsFile, writeSafetensors } from '../src/io/safetensors.js';
import { bf16BitsToF32, f32ToBf16Bits } from '../src/util/half.js';
import { loadModel, makeBackend } from '../src/runtime/load.js';
import { LutraError } from '../src/util/errors.js';
import { pearson } from '../src/verify/metrics.js';
import { parseDataset } from '../src/verify/dataset.js';
import {
  comparePrompt, evaluateGates, LlamaCppRunner, LutraRunner, parseGates, promptMetrics, repetitionFlags, stepMetrics, summarize,
  type PromptRun, type StepMetrics,
} from '../src/verify/compare.js';
import { tinyFixture, tokenSequence } from './helpers.js';

const MAIN = resolve(fileURLToPath(import.meta.url), '..', '..', 'src', 'cli', 'main.js');
const fx0 = await tinyFixture(0);
const fx1 = await tinyFixture(1);
test.after(() => {
  fx0.cleanup();
  fx1.cleanup();
});

function runner(dir: string, backend = 'reference'): LutraRunner {
  const { model, loadSeconds } = loadModel(dir, makeBackend(backend), { tokenizer: false });
  return new LutraRunner(dir, model, null, loadSeconds);
}

function cli(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, 'compare', ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

// ---------------------------------------------------------------------------------------------

test('metrics of a hand-built pair of logit rows', () => {
  const ref = [0, Math.log(2), 0]; // p = 1/4, 1/2, 1/4
  const cand = [Math.log(3), Math.log(2), Math.log(1)]; // q = 1/2, 1/3, 1/6
  const m = stepMetrics(ref, cand, false);
  const kl = 0.25 * Math.log(0.25 / 0.5) + 0.5 * Math.log(0.5 / (1 / 3)) + 0.25 * Math.log(0.25 / (1 / 6));
  assert.ok(Math.abs(m.kl - kl) < 1e-12, `KL ${m.kl} vs ${kl}`);
  const h = -(0.5 * Math.log(0.5) + (1 / 3) * Math.log(1 / 3) + (1 / 6) * Math.log(1 / 6));
  assert.ok(Math.abs(m.entropy - h) < 1e-12, `entropy ${m.entropy} vs ${h}`);
  // Pearson by hand: centred vectors, cos of the angle between them.
  const c = (v: number[]) => v.map((x) => x - (v[0] + v[1] + v[2]) / 3);
  const a = c(ref), b = c(cand);
  const r = (a[0] * b[0] + a[1] * b[1] + a[2] * b[2]) / Math.sqrt((a[0] ** 2 + a[1] ** 2 + a[2] ** 2) * (b[0] ** 2 + b[1] ** 2 + b[2] ** 2));
  assert.ok(Math.abs(m.corr - r) < 1e-12, `corr ${m.corr} vs ${r}`);
  assert.equal(m.match, false);
  assert.equal(m.refTop, 1);
  assert.equal(m.candTop, 0);
  assert.ok(Math.abs(m.margin - Math.log(2)) < 1e-12);
  // log-prob correlation is the same as logit correlation (shift invariance), away from the floor
  assert.ok(Math.abs(stepMetrics(ref, cand, true).corr - r) < 1e-12);
  assert.ok(Number.isNaN(pearson([1, 1, 1], [1, 2, 3])), 'a constant vector has no correlation');
  const same = stepMetrics(ref, ref, false);
  assert.equal(same.kl, 0);
  assert.ok(Math.abs(same.corr - 1) < 1e-15);

  // first divergence and means over a hand-built run
  const step = (match: boolean, kl: number): StepMetrics => ({ kl, corr: 0.5, entropy: 1, match, margin: 1, refTop: 0, candTop: match ? 0 : 1 });
  const run: PromptRun = { promptIds: [2], tokens: [0, 0, 0, 0], steps: [step(true, 0.1), step(true, 0.2), step(false, 0.3), step(true, 0.4)], promptKl: [], layers: null, seconds: { driver: 0, teacher: 0, metrics: 0 } };
  const pm = promptMetrics(run);
  assert.equal(pm.first_divergence, 2);
  assert.equal(pm.match_rate, 0.75);
  assert.ok(Math.abs(pm.kl_mean - 0.25) < 1e-12);
  assert.equal(pm.prompt_kl, null);
  const run2: PromptRun = { ...run, steps: [step(true, 1)], promptKl: [0.5] };
  const s = summarize([run, run2], null);
  assert.equal(s.count, 2);
  assert.equal(s.steps, 5);
  assert.ok(Math.abs(s.kl_mean - 2 / 5) < 1e-12, 'weighted by steps'); // (0.1+0.2+0.3+0.4+1)/5
  assert.equal(s.match_rate, 4 / 5);
  assert.equal(s.first_divergence_min, 2);
});

test('repetition flags', () => {
  assert.deepEqual(repetitionFlags([1, 2, ...Array(10).fill(7)]).stuck_token, { step: 2, token: 7 });
  assert.equal(repetitionFlags([1, 2, ...Array(9).fill(7)]).stuck_token, null);
  const phrase = [10, 11, 12, 13, 14, 15, 16, 17];
  assert.deepEqual(repetitionFlags([5, ...phrase, ...phrase, ...phrase]).phrase_repeat, { step: 1, length: 8 });
  assert.equal(repetitionFlags([5, ...phrase, ...phrase]).phrase_repeat, null);
});

test('dataset parsing: fields carried, blank and plain lines, malformed lines named', () => {
  const text = [
    '{"id": "long_history_03", "prompt": "History of England and UK", "category": "long_form", "risk": "repetition"}',
    '',
    '   ',
    'Tell me a story.',
    '{"text": "via text", "expected_repetition": true}',
    '{"input": "via input", "id": 7}',
  ].join('\n');
  const items = parseDataset(text, 'd.jsonl');
  assert.equal(items.length, 4);
  assert.deepEqual(items[0], { id: 'long_history_03', prompt: 'History of England and UK', line: 1, fields: { category: 'long_form', risk: 'repetition' } });
  assert.deepEqual(items[1], { id: 'line-4', prompt: 'Tell me a story.', line: 4, fields: {} });
  assert.deepEqual(items[2], { id: 'line-5', prompt: 'via text', line: 5, fields: { expected_repetition: true } });
  assert.equal(items[3].id, '7');
  assert.equal(items[3].prompt, 'via input');
  const bad = (t: string, re: RegExp) => assert.throws(() => parseDataset(t, 'd.jsonl'), (e: unknown) => e instanceof LutraError && re.test(e.message));
  bad('ok\n\n{"prompt": "x",}\n', /^d\.jsonl:3: malformed JSON line/);
  bad('{"id": "a"}', /^d\.jsonl:1: no "prompt", "text" or "input" field/);
  bad('{"prompt": 3}', /^d\.jsonl:1: "prompt" must be a non-empty string/);
  bad('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}', /^d\.jsonl:2: id "a" already used/);
  bad('\n\n', /no prompts/);
});

test('gate parsing and evaluation', () => {
  const gates = parseGates('kl<0.01, corr>0.99,match>=98%', false);
  assert.deepEqual(gates.map((g) => [g.metric, g.op, g.value]), [['kl_mean', '<', 0.01], ['corr_mean', '>', 0.99], ['match_rate', '>=', 0.98]]);
  const s = { kl_mean: 0.02, corr_mean: 0.995, match_rate: 0.98 } as Parameters<typeof evaluateGates>[1];
  assert.deepEqual(evaluateGates(gates, s).map((g) => g.pass), [false, true, true]);
  assert.throws(() => parseGates('perplexity<3', false), /unknown metric "perplexity"/);
  assert.throws(() => parseGates('kl=0.1', false), /expected METRIC<VALUE/);
  assert.throws(() => parseGates('layer>0.997', false), /needs --layers/);
  assert.equal(parseGates('layer>0.997', true)[0].metric, 'min_layer_cosine');
  // A per-layer gate names the first layer that fails its own threshold (not the report's 0.997).
  const layered = { min_layer_cosine: 0.98, layer_min_cosine: [0.9999, 0.996, 0.98, 0.999] } as Parameters<typeof evaluateGates>[1];
  const [strict] = evaluateGates(parseGates('layer_cos>=0.997', true), layered);
  assert.equal(strict.pass, false);
  assert.equal(strict.firstLayer, 1);
  assert.equal(evaluateGates(parseGates('layer_cos>0.99', true), layered)[0].firstLayer, 2);
  assert.equal(evaluateGates(parseGates('layer_cos>0.9', true), layered)[0].firstLayer, undefined);
});

// ---------------------------------------------------------------------------------------------

const PROMPT = tokenSequence(10, 77);

test('a model against itself: KL 0, correlation 1, match 1, no divergence, layer cosine 1', async (t) => {
  const a = runner(fx0.dir);
  const b = runner(fx0.dir);
  for (const driver of ['candidate', 'reference'] as const) {
    const run = await comparePrompt(a, b, PROMPT, { maxTokens: 10, driver, layerThreshold: 0.997 });
    const m = promptMetrics(run);
    t.diagnostic(`driver ${driver}: KL ${m.kl_mean}, corr ${m.corr_mean}, match ${m.match_rate}, prompt KL ${m.prompt_kl}, min layer cosine ${m.min_layer_cosine}`);
    assert.equal(m.steps, 10);
    assert.equal(run.tokens.length, 10);
    assert.ok(m.kl_mean <= 1e-9 && m.kl_max <= 1e-9, `KL ${m.kl_mean} / max ${m.kl_max}`);
    assert.ok(Math.abs(m.corr_mean! - 1) <= 1e-12, `corr ${m.corr_mean}`);
    assert.equal(m.match_rate, 1);
    assert.equal(m.first_divergence, null);
    assert.ok(m.prompt_kl !== null && m.prompt_kl <= 1e-9, `prompt KL ${m.prompt_kl}`);
    assert.equal(run.promptKl.length, PROMPT.length - 1);
    assert.ok(m.min_layer_cosine! >= 1 - 1e-12, `min layer cosine ${m.min_layer_cosine}`);
    assert.equal(m.first_layer_below, null);
  }
});

for (const backend of ['reference', 'wasm']) test(`single-layer cosine (${backend} backend): a candidate differing in one layer only departs from the reference at that layer; through the stack it drifts from there on`, async (t) => {
  const ref = runner(fx0.dir, backend);
  const cand = runner(fx0.dir, backend);
  t.after(() => [ref, cand].forEach((r) => r.model.backend.dispose?.()));
  const K = 3;
  const layers = (cand.model as unknown as { layers: { postFfnNorm: Float32Array }[] }).layers;
  const gain = layers[K].postFfnNorm;
  for (let i = 0; i < gain.length; i += 3) gain[i] *= 1.5; // layer K's feed-forward output, a third of its channels
  const run = await comparePrompt(cand, ref, PROMPT, { maxTokens: 6, driver: 'candidate', layerThreshold: 0.997 });
  const L = run.layers!;
  const single = L.single!;
  t.diagnostic(`through the stack: ${L.minCosine.map((c) => c.toFixed(5)).join(' ')}; single layer: ${single.minCosine.map((c) => c.toFixed(5)).join(' ')}`);
  for (let l = 0; l < layers.length; l++) {
    if (l < K) {
      assert.ok(L.minCosine[l] >= 1 - 1e-12 && single.minCosine[l] >= 1 - 1e-12, `layer ${l} before the change`);
    } else if (l === K) {
      assert.ok(single.minCosine[l] < 0.9999 && Math.abs(single.minCosine[l] - L.minCosine[l]) < 1e-12, `layer ${K}: the same input on both runs`);
    } else {
      // Unchanged weights on the reference's input reproduce the reference's output.
      assert.ok(single.minCosine[l] >= 1 - 1e-12 && single.meanRelError[l] < 1e-6, `layer ${l} single-layer cosine ${single.minCosine[l]}, rel. error ${single.meanRelError[l]}`);
      assert.ok(L.minCosine[l] < 0.99999 && L.meanRelError[l] > 1e-4, `layer ${l} through the stack ${L.minCosine[l]}`);
    }
  }
  const s = summarize([run], 0.997);
  assert.equal(s.min_single_layer_cosine, single.minCosine[K]);
  const [g] = evaluateGates(parseGates(`single_layer>=${(single.minCosine[K] + 1) / 2}`, true), s);
  assert.equal(g.pass, false);
  assert.equal(g.firstLayer, K);
});

test('two different models (seeds 0 and 1): large KL, early divergence; --driver decides whose tokens are followed', async (t) => {
  const c = runner(fx0.dir);
  const r = runner(fx1.dir);
  const byCand = await comparePrompt(c, r, PROMPT, { maxTokens: 8, driver: 'candidate', layerThreshold: null });
  const byRef = await comparePrompt(c, r, PROMPT, { maxTokens: 8, driver: 'reference', layerThreshold: null });
  for (const run of [byCand, byRef]) {
    const m = promptMetrics(run);
    t.diagnostic(`KL ${m.kl_mean.toFixed(3)}, corr ${m.corr_mean!.toFixed(4)}, match ${m.match_rate}, first divergence ${m.first_divergence}, prompt KL ${m.prompt_kl!.toFixed(3)}`);
    assert.ok(m.kl_mean > 1, `KL ${m.kl_mean}`);
    assert.ok(m.prompt_kl! > 1, `prompt KL ${m.prompt_kl}`);
    assert.ok(m.first_divergence !== null && m.first_divergence <= 2, `first divergence ${m.first_divergence}`);
    assert.ok(m.match_rate < 0.5);
    assert.ok(m.corr_mean! < 0.5, `corr ${m.corr_mean}`);
  }
  // The driver's greedy tokens are its own argmax at every step.
  assert.deepEqual(byCand.tokens, byCand.steps.map((s) => s.candTop));
  assert.deepEqual(byRef.tokens, byRef.steps.map((s) => s.refTop));
  assert.notDeepEqual(byCand.tokens, byRef.tokens);
});

test('a perturbed candidate (one norm weight scaled by 1.02 in layer 3): small KL, and --layers names layer 3', async (t) => {
  const pert = join(fx0.root, 'perturbed');
  cpSync(fx0.dir, pert, { recursive: true });
  const target = 'model.layers.3.post_feedforward_layernorm.weight';
  const st = SafetensorsFile.open(join(fx0.dir, 'model.safetensors'));
  try {
    await writeSafetensors(
      join(pert, 'model.safetensors'),
      [...st.entries.values()].map((e) => ({
        name: e.name,
        dtype: e.dtype,
        shape: e.shape,
        bytes: () => {
          const b = st.read(e.name);
          if (e.name === target) {
            const u = new Uint16Array(b.buffer, b.byteOffset, b.byteLength / 2);
            for (let i = 0; i < u.length; i++) u[i] = f32ToBf16Bits((1 + bf16BitsToF32(u[i])) * 1.02 - 1);
          }
          return b;
        },
      })),
    );
  } finally {
    st.close();
  }
  const c = runner(pert);
  const r = runner(fx0.dir);
  const run = await comparePrompt(c, r, PROMPT, { maxTokens: 10, driver: 'candidate', layerThreshold: 0.99999 });
  const m = promptMetrics(run);
  t.diagnostic(`KL ${m.kl_mean.toExponential(3)} (max ${m.kl_max.toExponential(3)}), corr ${m.corr_mean}, match ${m.match_rate}, prompt KL ${m.prompt_kl!.toExponential(3)}; per-layer min cosine ${run.layers!.minCosine.map((c) => c.toFixed(7)).join(' ')}`);
  assert.ok(m.kl_mean > 1e-7 && m.kl_mean < 0.05, `KL ${m.kl_mean}`);
  assert.ok(m.corr_mean! > 0.999 && m.corr_mean! < 1, `corr ${m.corr_mean}`);
  const cos = run.layers!.minCosine;
  for (let l = 0; l < 3; l++) assert.equal(cos[l], 1, `layer ${l} is untouched`);
  assert.ok(cos[3] < 0.99999, `layer 3 cosine ${cos[3]}`);
  assert.equal(run.layers!.firstBelow, 3);
  // at the default gate (0.997) this perturbation passes every layer
  const loose = await comparePrompt(c, r, PROMPT, { maxTokens: 4, driver: 'candidate', layerThreshold: 0.997 });
  assert.equal(loose.layers!.firstBelow, null);
});

test('gguf: candidate (llama.cpp, f32 export) against the lutra reference: KL < 1e-4, match 1', async (t) => {
  const gguf = join(fx0.root, 'tiny-f32.gguf');
  await exportGguf({ model: fx0.dir, out: gguf, type: 'f32' });
  const ids = PROMPT.slice(0, 5);
  const cand = await LlamaCppRunner.open(`gguf:${gguf}`, gguf, 16, 2);
  try {
    const ref = runner(fx0.dir);
    assert.equal(cand.vocabSize, ref.vocabSize);
    for (const driver of ['candidate', 'reference'] as const) {
      const run = await comparePrompt(cand, ref, ids, { maxTokens: 5, driver, layerThreshold: null });
      const m = promptMetrics(run);
      t.diagnostic(`driver ${driver}: KL ${m.kl_mean.toExponential(3)} (max ${m.kl_max.toExponential(3)}), corr ${m.corr_mean}, match ${m.match_rate}, prompt KL ${m.prompt_kl!.toExponential(3)}`);
      assert.equal(m.steps, 5);
      assert.ok(m.kl_mean < 1e-4 && m.kl_max < 1e-3, `${driver}: KL ${m.kl_mean} / max ${m.kl_max}`);
      assert.ok(m.prompt_kl! < 1e-4, `${driver}: prompt KL ${m.prompt_kl}`);
      assert.ok(m.corr_mean! > 0.9999, `${driver}: corr ${m.corr_mean}`);
      assert.equal(m.match_rate, 1, driver);
      assert.equal(m.first_divergence, null);
    }
  } finally {
    await cand.dispose();
  }
});

// ---------------------------------------------------------------------------------------------
// Through the CLI

test('CLI: dataset, --layers, passing gates, out-dir files with the required fields', () => {
  const data = join(fx0.root, 'prompts.jsonl');
  writeFileSync(data, '{"id": "egypt", "prompt": "History of Ancient Egypt", "category": "long_form", "risk": "repetition"}\n\nWhat is 2+2?\n');
  const out = join(fx0.root, 'out');
  // The reference backend sums in f64, so a model against itself gives exactly KL 0 and cosine 1
  // (the wasm default decodes and teacher-forces through different kernels: equal to ~1e-12).
  const r = cli([fx0.dir, '--reference', fx0.dir, '--dataset', data, '--max-tokens', '4', '--layers', '--out-dir', out, '--gate', 'kl<0.01,corr>0.99,match>0.98,layer>=0.997', '--backend', 'reference']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /ALL \(2\)/);
  assert.match(r.stdout, /gate kl<0\.01: pass/);
  assert.match(r.stderr, /\[1\/2\] egypt/);
  assert.match(r.stderr, /\[2\/2\] line-3/);
  for (const f of ['results.jsonl', 'summary.json', 'report.md', 'report.html']) assert.ok(existsSync(join(out, f)), f);
  const lines = readFileSync(join(out, 'results.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(lines.length, 2);
  assert.equal(lines[0].id, 'egypt');
  assert.equal(lines[0].category, 'long_form');
  assert.equal(lines[0].risk, 'repetition');
  assert.equal(lines[1].id, 'line-3');
  for (const l of lines) {
    assert.ok(Array.isArray(l.ids) && l.ids[0] === 2);
    assert.equal(l.generated_ids.length, 4);
    assert.equal(typeof l.generated_text, 'string');
    assert.equal(l.first_divergence, null);
    assert.equal(l.metrics.kl_mean, 0);
    assert.equal(l.metrics.match_rate, 1);
    assert.equal(l.per_step.kl.length, 4);
    assert.equal(l.layers.min_cosine.length, 8);
  }
  const s = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8'));
  assert.equal(s.count, 2);
  assert.equal(s.steps, 8);
  assert.equal(s.kl_mean, 0);
  assert.equal(s.corr_mean, 1);
  assert.equal(s.match_rate, 1);
  assert.equal(typeof s.entropy_mean, 'number');
  assert.equal(s.min_layer_cosine, 1);
  assert.equal(typeof s.seconds.run, 'number');
  const md = readFileSync(join(out, 'report.md'), 'utf8');
  assert.match(md, /\| KL\(P_ref ‖ P_cand\), nats \| 0 \| healthy \| healthy \|/);
  assert.match(md, /\| egypt \| 4 \|/);
  const html = readFileSync(join(out, 'report.html'), 'utf8');
  assert.equal((html.match(/aria-label="per-step KL and match"/g) ?? []).length, 2);
  assert.match(html, /aria-label="per-layer cosine"/);
});

test('CLI: a failing gate exits 1 and names the metric; input errors are one line', () => {
  const ids = PROMPT.slice(0, 6).join(',');
  const r = cli([fx0.dir, '--reference', fx1.dir, '--prompt-ids', ids, '--max-tokens', '3', '--gate', 'kl<0.01,entropy>0']);
  assert.equal(r.code, 1);
  assert.match(r.stdout, /gate kl<0\.01: FAIL/);
  assert.match(r.stdout, /gate entropy>0: pass/);
  assert.match(r.stderr, /lutra: error: gate failed: kl_mean = \S+ \(needs < 0\.01\)\n$/);

  const bad = join(fx0.root, 'bad.jsonl');
  writeFileSync(bad, '{"prompt": "fine"}\n{"prompt": oops}\n');
  const e1 = cli([fx0.dir, '--reference', fx0.dir, '--dataset', bad]);
  assert.equal(e1.code, 1);
  assert.match(e1.stderr, /^lutra: error: .*bad\.jsonl:2: malformed JSON line/);
  const e2 = cli([fx0.dir, '--reference', 'gguf:/nonexistent.gguf', '--prompt', 'x', '--layers']);
  assert.equal(e2.code, 1);
  assert.match(e2.stderr, /^lutra: error: --layers needs hidden states from both models; gguf:\/nonexistent\.gguf runs on llama\.cpp/);
  const e3 = cli([fx0.dir, '--reference', fx0.dir, '--prompt', 'x', '--prompt-ids', '2,3']);
  assert.match(e3.stderr, /give exactly one of --prompt, --prompt-file, --prompt-ids, --dataset \(got --prompt, --prompt-ids\)/);
  const e4 = cli([fx0.dir, '--reference', fx0.dir, '--prompt', 'x', '--gate', 'kl<0.1', '--driver', 'pt']);
  assert.match(e4.stderr, /--driver pt: expected candidate or reference/);
});
