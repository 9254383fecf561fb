#!/usr/bin/env node
// Speculative decoding benchmark (`npm run bench:speculative`): per model, workload and draft
// source, the acceptance rate, tokens per target forward pass and decode tok/s against plain
// greedy decoding in the same run, beside the all-logits prefill rate of a verify-sized batch
// (the ceiling: every draft accepted). Models: the demo model; the demo model with its copy adapter
// merged (models/demo-copy-lora: the demo model alone does not copy text); and a gemma-3-270m-shaped int8:32
// package made from a random-weight fixture in a temporary folder (its int4:32 conversion is the
// draft model). Writes the table into docs/BENCHMARKS.md (section "Speculative decoding") and
// the variant rows (draft lengths, n-gram sizes) to stdout as JSON.
//
// usage: node tools/bench/speculative.mjs [--tokens 96] [--threads N] [--models demo,demo-copy,gemma-3-270m]
//        [--variants] [--out docs/BENCHMARKS.md] [--no-write]
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js');
const { loadModel } = await import(join(ROOT, 'dist', 'src', 'index.js'));
const { Session } = await import(join(ROOT, 'dist', 'src', 'runtime', 'session.js'));

const { values: o } = parseArgs({
  options: {
    tokens: { type: 'string', default: '96' },
    threads: { type: 'string' },
    models: { type: 'string', default: 'demo,demo-copy,gemma-3-270m' },
    variants: { type: 'boolean', default: false },
    out: { type: 'string', default: join(ROOT, 'docs', 'BENCHMARKS.md') },
    'no-write': { type: 'boolean', default: false },
  },
});
const maxTokens = Number(o.tokens);
// One thread by default: the CPU time of one thread is the steady measure on a shared machine.
const threads = o.threads ? Number(o.threads) : 1;

function cli(...args) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`lutra ${args.join(' ')}: ${r.stderr}`);
}

// A KJV passage (the demo model's training text) for the copy and quote workloads.
const passage =
  'In the beginning God created the heaven and the earth. And the earth was without form, and void; and darkness was upon the face of the deep. ' +
  'And the Spirit of God moved upon the face of the waters. And God said, Let there be light: and there was light. ' +
  'And God saw the light, that it was good: and God divided the light from the darkness.';
const WORKLOADS = [
  { name: 'copy (repeat the passage)', prompts: [`${passage}\n\nRepeat the passage above word for word.\n\n${passage.slice(0, 60)}`, `Copy this text: ${passage}\nCopy: ${passage.slice(0, 40)}`] },
  { name: 'summarise with quotes', prompts: [`${passage}\n\nSummarise the passage, quoting its key lines: "`, `${passage}\n\nThe passage says that "`] },
  { name: 'free chat', prompts: readFileSync(join(ROOT, 'bench', 'prompts.jsonl'), 'utf8').trim().split('\n').slice(0, 4).map((l) => JSON.parse(l).prompt) },
];

/** Decode tok/s, acceptance and tokens per pass of one configuration over a workload's prompts. */
async function run(model, prompts, speculative) {
  let tokens = 0;
  let ms = 0;
  let drafted = 0;
  let accepted = 0;
  let passes = 0;
  let produced = 0;
  let cpuMs = 0;
  const ids = [];
  for (const p of prompts) {
    await model.complete(p, { maxTokens: 1 }); // the prompt is cached: what follows is decode
    const c0 = process.cpuUsage();
    const r = await model.complete(p, { maxTokens, speculative });
    const c = process.cpuUsage(c0);
    cpuMs += (c.user + c.system) / 1000;
    tokens += r.timings.decodeSteps;
    ms += r.timings.decodeMs;
    ids.push(r.tokenIds.join(','));
    if (r.speculative) {
      drafted += r.speculative.drafted;
      accepted += r.speculative.accepted;
      passes += r.speculative.passes;
      produced += r.speculative.tokensPerPass * r.speculative.passes;
    }
  }
  return { tokPerS: (tokens * 1000) / ms, cpuTokPerS: (tokens * 1000) / cpuMs, acceptance: drafted ? accepted / drafted : 0, tokensPerPass: passes ? produced / passes : 1, drafted, ids };
}

/** Rate of an all-logits forward over T tokens (a verify pass of T − 1 drafts), tokens per second. */
function verifyRate(model, T) {
  const s = new Session(model.engine, { rollbackSlack: 64 });
  try {
    s.prefill(model.tokenize(passage));
    const ids = model.tokenize(passage, { bos: false }).slice(0, T);
    const n = 8;
    s.prefill(ids, { all: true });
    s.truncate(s.position - T);
    const cpu = () => {
      const c = process.cpuUsage();
      return (c.user + c.system) / 1000;
    };
    const t0 = cpu();
    for (let i = 0; i < n; i++) {
      s.prefill(ids, { all: true });
      s.truncate(s.position - T);
    }
    const msPass = (cpu() - t0) / n;
    const t1 = cpu();
    for (let i = 0; i < n; i++) {
      s.step(ids[0]);
      s.truncate(s.position - 1);
    }
    const msStep = (cpu() - t1) / n;
    return { T, tokPerS: (T * 1000) / msPass, passOverStep: msPass / msStep };
  } finally {
    s.dispose();
  }
}

const work = mkdtempSync(join(tmpdir(), 'lutra-spec-bench-'));
const sections = [];
const variants = [];
try {
  for (const name of o.models.split(',')) {
    let path = join(ROOT, 'models', 'demo');
    let draftPath;
    if (name === 'demo') {
      draftPath = join(work, 'demo-int4');
      cli('convert', '--model', path, '--out', draftPath, '--quant', 'all=int4:32');
    } else if (name === 'demo-copy') {
      // The demo model with its copy adapter merged (models/demo-copy-lora): a model that copies.
      const lora = join(ROOT, 'models', 'demo-copy-lora');
      path = join(work, 'demo-copy');
      cli('convert', '--model', join(ROOT, 'models', 'demo'), '--lora', lora, '--out', path);
      draftPath = join(work, 'demo-copy-int4');
      cli('convert', '--model', path, '--out', draftPath, '--quant', 'all=int4:32');
    } else {
      cli('fixture', '--shape', name, '--out', join(work, 'hf'));
      path = join(work, `${name}-int8-32`);
      cli('convert', '--model', join(work, 'hf'), '--out', path, '--quant', 'all=int8:32');
      draftPath = join(work, `${name}-int4-32`);
      cli('convert', '--model', join(work, 'hf'), '--out', draftPath, '--quant', 'all=int4:32');
      rmSync(join(work, 'hf'), { recursive: true, force: true });
    }
    const model = await loadModel(path, { threads });
    const draft = await loadModel(draftPath, { threads });
    const ceiling = [5, 9].map((T) => verifyRate(model, T));
    const rows = [];
    for (const w of WORKLOADS) {
      const plain = await run(model, w.prompts, undefined);
      rows.push({ workload: w.name, source: 'plain', ...plain, speedup: 1, wallSpeedup: 1, same: true });
      for (const [label, spec] of [['lookup', 'lookup'], ['suffix', 'suffix'], ['draft (int4 self-draft)', { draft }]]) {
        const r = await run(model, w.prompts, spec);
        rows.push({ workload: w.name, source: label, ...r, speedup: r.cpuTokPerS / plain.cpuTokPerS, wallSpeedup: r.tokPerS / plain.tokPerS, same: r.ids.join() === plain.ids.join() });
      }
      if (o.variants) {
        for (const spec of [
          ...[2, 4, 8].map((k) => ({ source: 'lookup', adaptive: false, maxDraft: k })),
          ...[1, 2, 3].map((n) => ({ source: 'lookup', ngram: n })),
          ...[1, 2, 3].map((n) => ({ source: 'suffix', ngram: n })),
          ...[2, 4].map((k) => ({ source: 'draft', draft, adaptive: false, maxDraft: k })),
        ]) {
          const r = await run(model, w.prompts, spec);
          const { draft: _d, ...shown } = spec;
          variants.push({ model: name, workload: w.name, spec: shown, cpuTokPerS: r.cpuTokPerS, plain: plain.cpuTokPerS, speedup: r.cpuTokPerS / plain.cpuTokPerS, wallSpeedup: r.tokPerS / plain.tokPerS, acceptance: r.acceptance, tokensPerPass: r.tokensPerPass });
        }
      }
    }
    const title = { demo: 'models/demo (bf16)', 'demo-copy': 'models/demo + models/demo-copy-lora merged (bf16)' }[name] ?? `${name} fixture, int8:32`;
    sections.push({ name, path: title, rows, ceiling });
    draft.dispose();
    model.dispose();
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}

const f = (x, d = 2) => x.toFixed(d);
const lines = [
  '## Speculative decoding',
  '',
  `Generated by \`npm run bench:speculative\` (tools/bench/speculative.mjs) on ${new Date().toISOString().slice(0, 10)}: wasm backend,`,
  `${threads} thread(s), greedy, ${maxTokens} tokens per prompt (prompt cached: decode only), load average`,
  `${loadavg().map((x) => x.toFixed(1)).join(' / ')} at the end. The cores were shared, so wall-clock rates are noisy; the`,
  'speed-up is measured in CPU time of the process (decode tokens per CPU second), against plain decoding in',
  'the same run. "same" = the output equals plain greedy token for token. Drafts adapt their length and',
  'switch off when they do not pay (tokens / pass near 1: drafting was off most of the time). The ceiling is',
  'the all-logits forward rate of a verify-sized batch (T tokens in one pass; every draft accepted).',
  'Random-weight fixtures do not copy text, so acceptance there measures the engine cost of drafting,',
  'not what drafting buys on a trained model. Nor does the demo model (9.2 M parameters trained on 2.9 M',
  'tokens): asked to repeat a passage it writes new verses. The demo-copy rows are the demo model with a',
  'LoRA adapter trained to repeat and quote passages in its context merged into it (models/demo-copy-lora,',
  'trained by tools/train-demo/train_copy_lora.py on passages other than the benchmark\'s): the copy-heavy',
  'workload on a model that copies. int8/int4 packages run their matmuls on q8 activations, and a',
  "batched forward's f32 activations differ from one-token steps' by ~1e-6 (sums in another order), which",
  'flips a q8 code at a rounding boundary now and then (up to ~0.16 in a logit on the 270m fixture; 1e-5 with',
  'f32 activations; the q8 matmuls themselves agree on equal inputs, EXPERIMENTS SD4): there greedy speculative output follows the batched',
  'numerics and can leave plain greedy output at a near-tie ("NO" below). bf16/f32 models agree (the demo).',
  '',
  "The seed project's figures, for comparison (an iPhone 17 Pro's neural engine running Gemma 4 E2B; no",
  'end-to-end speed-up was reported for any of them): suffix-tree drafts over earlier outputs found a match',
  'for 2 %, 29 %, then 48 % of tokens as the tree grew over four multi-turn chats, and the top draft token',
  'was right for 18.4 % of those matches, so suffix drafting was demoted to a helper; an EAGLE-3 draft head',
  'was in training with a first-token acceptance of 75 %; Medusa heads were shelved at ~1.3 % published',
  'acceptance on Gemma-class models. The SuffixDecoding paper it cites reports 1.9–5.3× on agentic and',
  'production chat workloads.',
  '',
];
for (const s of sections) {
  lines.push(`### ${s.path}`, '');
  lines.push(`Ceiling (all-logits forward, CPU time): ${s.ceiling.map((c) => `T=${c.T}: ${f(c.tokPerS, 1)} tok/s, one pass = ${f(c.passOverStep)}× a one-token step`).join('; ')}.`, '');
  const copy = s.rows.filter((r) => r.workload.startsWith('copy') && r.source !== 'plain' && !r.source.startsWith('draft'));
  const free = s.rows.filter((r) => r.workload === 'free chat' && r.source !== 'plain');
  const bestCopy = copy.reduce((x, y) => (y.speedup > x.speedup ? y : x));
  const worstFree = free.reduce((x, y) => (y.speedup < x.speedup ? y : x));
  lines.push(
    `Targets (CPU time): copy-heavy with lookup or suffix ≥ 1.8× plain: best ${bestCopy.source} ${f(bestCopy.speedup)}× (${bestCopy.speedup >= 1.8 ? 'met' : 'not met'}); ` +
      `no source under 0.95× on free chat: slowest ${worstFree.source} ${f(worstFree.speedup)}× (${worstFree.speedup >= 0.95 ? 'met' : 'not met'}).`,
    '',
  );
  lines.push('| workload | draft source | acceptance | tokens / pass | decode tok/s (CPU) | vs plain (CPU) | decode tok/s (wall) | vs plain (wall) | same |', '|---|---|---|---|---|---|---|---|---|');
  for (const r of s.rows) {
    lines.push(`| ${r.workload} | ${r.source} | ${r.source === 'plain' ? '–' : `${f(100 * r.acceptance, 1)} %`} | ${f(r.tokensPerPass)} | ${f(r.cpuTokPerS, 1)} | ${f(r.speedup)}× | ${f(r.tokPerS, 1)} | ${f(r.wallSpeedup)}× | ${r.same ? 'yes' : 'NO'} |`);
  }
  lines.push('');
}
const table = lines.join('\n');
process.stdout.write(`${table}\n`);
if (variants.length) process.stdout.write(`${JSON.stringify(variants, null, 1)}\n`);
if (!o['no-write']) {
  const doc = readFileSync(o.out, 'utf8');
  const start = doc.indexOf('## Speculative decoding');
  let next = start >= 0 ? doc.indexOf('\n## ', start + 3) : -1;
  const updated = start < 0 ? `${doc.trimEnd()}\n\n${table}` : `${doc.slice(0, start)}${table}${next >= 0 ? doc.slice(next) : ''}`;
  const tmp = `${o.out}.tmp-${process.pid}`;
  writeFileSync(tmp, updated.endsWith('\n') ? updated : `${updated}\n`);
  renameSync(tmp, o.out);
  process.stderr.write(`wrote ${o.out}\n`);
}
