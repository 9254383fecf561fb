#!/usr/bin/env node
// The serving benchmark (`npm run bench:serve`): `lutra serve` under 1, 2, 4 and 8 concurrent
// streaming completions, and node-llama-cpp running the same prompts on the same weights as the
// same number of parallel sequences of one context. Written into docs/BENCHMARKS.md as the
// "Serving" section (the rest of the file is kept).
//
// Models: the demo model (models/demo, bf16; llama.cpp gets an F16 export: same 2 bytes per
// weight) and a gemma-3-270m-shaped random fixture converted to int8:32 (llama.cpp gets a Q8_0
// export, block for block the same bytes), both made in a temporary folder that is removed at the end.
//
// Per round of N streams, each with its own prompt (no two prompts share more than <bos>, and no
// prompt is sent twice, so no round reuses another's cache), all started at once:
//  - time to first token: from the start of the round to the first streamed text of a stream;
//  - aggregate decode tok/s: the tokens each stream generated after its first, summed, over the
//    decode phase (the first stream's first token to the last stream's end);
//  - per-stream decode tok/s: a stream's tokens after its first over its own first-token-to-end time.
// llama.cpp generates exactly as many tokens per prompt as lutra did (evaluate() does not stop at
// an end-of-turn token), so both sides do the same work.
//
// usage: node tools/bench/serve.mjs [--models demo,gemma-3-270m] [--streams 1,2,4,8] [--max-tokens 64]
//        [--prompt-tokens 64] [--threads N (default: the machine's cores)] [--context 256]
//        [--out docs/BENCHMARKS.md] [--no-write] [--save RUN.json | --render RUN.json]
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js');
const HEADING = '## Serving';
const STANDARD_END = '<!-- end of standard table -->';

let o;
try {
  ({ values: o } = parseArgs({
  options: {
    models: { type: 'string', default: 'demo,gemma-3-270m' },
    streams: { type: 'string', default: '1,2,4,8' },
    'max-tokens': { type: 'string', default: '64' },
    'prompt-tokens': { type: 'string', default: '64' },
    threads: { type: 'string', default: String(availableParallelism()) },
    context: { type: 'string', default: '256' },
    out: { type: 'string', default: join(ROOT, 'docs', 'BENCHMARKS.md') },
    // Print the table without touching the output file.
    'no-write': { type: 'boolean', default: false },
    // Keep the measured figures as JSON; render such a file again (prose changes) without measuring.
    save: { type: 'string' },
    render: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
  strict: true,
  }));
} catch (e) {
  process.stderr.write(`bench: error: ${e.message.split('\n')[0]}\n`);
  process.exit(1);
}
if (o.help) {
  const usage = readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').filter((l) => l.startsWith('// usage:') || l.startsWith('//        ['));
  process.stdout.write(usage.map((l) => l.slice(3)).join('\n') + '\n');
  process.exit(0);
}

let tmp = null;
let server = null;
const cleanup = () => {
  if (server && server.exitCode === null) server.kill('SIGKILL');
  if (tmp) rmSync(tmp, { recursive: true, force: true });
  tmp = null;
};
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, () => {
    process.stderr.write(`bench: ${sig}, stopping\n`);
    process.exit(130);
  });
}
const fail = (msg) => {
  process.stderr.write(`bench: error: ${msg}\n`);
  process.exit(1);
};
const say = (msg) => process.stderr.write(`bench: ${msg}\n`);

function positiveInt(flag, text) {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) fail(`--${flag} ${text}: expected a positive integer`);
  return n;
}
const MODELS = {
  demo: { label: 'demo (9.2 M)', lutraWeights: 'bf16', ggufType: 'f16' },
  'gemma-3-270m': { label: 'gemma-3-270m shape', lutraWeights: 'int8:32', ggufType: 'q8_0' },
};
const models = o.models.split(',').filter(Boolean);
for (const m of models) if (!(m in MODELS)) fail(`--models ${m}: expected ${Object.keys(MODELS).join(' or ')}`);
const streams = o.streams.split(',').filter(Boolean).map((s) => positiveInt('streams', s));
const maxTokens = positiveInt('max-tokens', o['max-tokens']);
const promptTokens = positiveInt('prompt-tokens', o['prompt-tokens']);
const threads = positiveInt('threads', o.threads);
const context = positiveInt('context', o.context);
const parallel = Math.max(...streams);
if (promptTokens + maxTokens > context) fail(`--context ${context}: the prompt (${promptTokens}) and the answer (${maxTokens}) need ${promptTokens + maxTokens}`);
if (!existsSync(CLI)) fail(`${CLI} is missing: run \`npm run build\` first`);

/** Run lutra to completion; its progress goes to stderr. */
function lutra(args) {
  say(`$ lutra ${args.join(' ')}`);
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', stdio: ['ignore', 'ignore', 'inherit'] });
  if (r.status !== 0) fail(`lutra ${args[0]} failed (exit ${r.status ?? r.signal})`);
}

// ── prompts ────────────────────────────────────────────────────────────────────────────────
// One text, opened by a different word per request; cut to exactly --prompt-tokens ids.
const OPENERS = [
  'Behold', 'Now', 'Then', 'And', 'For', 'But', 'Verily', 'Therefore', 'Hear', 'Lo', 'So', 'When', 'After', 'In', 'Thus', 'Blessed',
  'Remember', 'Again', 'Also', 'Yet', 'Wherefore', 'Moreover', 'Surely', 'Who', 'Why', 'How', 'What', 'Arise', 'Go', 'Come', 'Let', 'Give',
];
const TEXT =
  'in the beginning God created the heaven and the earth. And the earth was without form, and void; and darkness was upon the face of the deep. ' +
  'And the Spirit of God moved upon the face of the waters. And God said, Let there be light: and there was light. And God saw the light, that it ' +
  'was good: and God divided the light from the darkness. And God called the light Day, and the darkness he called Night. And the evening and the ' +
  'morning were the first day. And God said, Let there be a firmament in the midst of the waters, and let it divide the waters from the waters.';

async function makePrompts(modelDir, count) {
  if (count > OPENERS.length) fail(`${count} prompts needed, ${OPENERS.length} openers available: use fewer or smaller --streams`);
  const { GemmaTokenizer } = await import(pathToFileURL(join(ROOT, 'dist', 'src', 'tokenizer', 'tokenizer.js')).href);
  const tok = GemmaTokenizer.load(modelDir);
  const prompts = OPENERS.slice(0, count).map((w) => tok.encode(`${w} ${TEXT}`).slice(0, promptTokens));
  if (prompts.some((p) => p.length < promptTokens)) fail(`${modelDir}: the benchmark text is shorter than ${promptTokens} tokens in this tokenizer`);
  const second = new Set(prompts.map((p) => p[1]));
  if (second.size !== prompts.length) fail(`${modelDir}: two openers start with the same token; the prompts would share a prefix`);
  return prompts;
}

// ── lutra serve ───────────────────────────────────────────────────────────────────────────
function startServer(modelDir) {
  const args = ['serve', '--model', modelDir, '--port', '0', '--parallel', String(parallel), '--threads', String(threads), '--context', String(context), '--quiet'];
  say(`$ lutra ${args.join(' ')}`);
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  server = child;
  let err = '';
  return new Promise((res) => {
    const timer = setTimeout(() => fail(`lutra serve did not start in 300 s:\n${err.slice(-2000)}`), 300_000);
    child.stderr.on('data', (b) => {
      err = (err + b.toString()).slice(-8000);
      const m = /listening on (http:\/\/\S+)/.exec(err);
      if (m && timer) {
        clearTimeout(timer);
        res({ url: m[1], stderr: () => err });
      }
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (server === child) fail(`lutra serve exited (${code ?? signal}) while the benchmark needed it:\n${err.slice(-2000)}`);
    });
  });
}

async function stopServer() {
  const child = server;
  server = null;
  if (!child || child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(t);
}

/** One streaming completion; times relative to t0. */
async function lutraStream(url, ids, tokens, t0) {
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: ids, stream: true, stream_options: { include_usage: true }, temperature: 0, max_tokens: tokens }),
  });
  if (res.status !== 200) throw new Error(`POST /v1/completions: HTTP ${res.status}: ${await res.text()}`);
  const decoder = new TextDecoder();
  let buf = '';
  let first = null;
  let usage = null;
  let done = false;
  for await (const part of res.body) {
    buf += decoder.decode(part, { stream: true });
    for (let i; (i = buf.indexOf('\n\n')) >= 0; buf = buf.slice(i + 2)) {
      for (const line of buf.slice(0, i).split('\n')) {
        if (!line.startsWith('data: ')) continue;
        const data = line.slice(6);
        if (data === '[DONE]') {
          done = true;
          continue;
        }
        const j = JSON.parse(data);
        if (j.error) throw new Error(`stream error: ${j.error.message}`);
        if (j.choices?.length && first === null) first = performance.now() - t0;
        if (j.usage) usage = j.usage;
      }
    }
  }
  const end = performance.now() - t0;
  if (!done || !usage || first === null) throw new Error('the stream ended without text, usage or [DONE]');
  return { first, end, tokens: usage.completion_tokens, promptTokens: usage.prompt_tokens, cached: usage.prompt_tokens_details?.cached_tokens ?? 0 };
}

async function lutraRounds(modelDir, prompts) {
  const { url } = await startServer(modelDir);
  // Warm-up: every session of the pool once (its KV cache allocated, kernels and JIT warm), with
  // prompts used nowhere else.
  say(`lutra: warm-up (${parallel} short streams)`);
  const warm = prompts.splice(0, parallel);
  await Promise.all(warm.map((ids) => lutraStream(url, ids, 4, performance.now())));
  const rounds = [];
  for (const n of streams) {
    const batch = prompts.splice(0, n);
    const t0 = performance.now();
    const s = await Promise.all(batch.map((ids) => lutraStream(url, ids, maxTokens, t0)));
    for (const x of s) {
      if (x.promptTokens !== promptTokens) fail(`lutra counted ${x.promptTokens} prompt tokens, expected ${promptTokens}`);
      if (x.cached > 1) fail(`lutra served ${x.cached} prompt tokens from a cache: the prompts share a prefix`);
    }
    rounds.push({ n, prompts: batch, streams: s, ...summarise(s) });
    say(`lutra ${n} stream${n > 1 ? 's' : ''}: ${line(rounds.at(-1))}`);
  }
  await stopServer();
  return rounds;
}

// ── node-llama-cpp ────────────────────────────────────────────────────────────────────────
async function llamaCpp() {
  try {
    const mod = await import('node-llama-cpp');
    const llama = await mod.getLlama({ gpu: false, build: 'never', logLevel: mod.LlamaLogLevel.error, maxThreads: 0, progressLogs: false });
    return { llama, version: JSON.parse(readFileSync(join(ROOT, 'node_modules', 'node-llama-cpp', 'package.json'), 'utf8')).version };
  } catch (e) {
    fail(`node-llama-cpp (a devDependency) could not be loaded: ${e.message}; install it with \`npm install --include=dev\``);
  }
}

/** N sequences of one context, each evaluating its prompt then as many greedy tokens as lutra generated for it. */
async function llamaRound(model, batch, targets, nThreads, warmIds) {
  const n = batch.length;
  const ctx = await model.createContext({
    sequences: n,
    contextSize: context,
    batchSize: Math.max(n * promptTokens, 64),
    threads: { ideal: nThreads, min: nThreads },
    flashAttention: false,
    ignoreMemorySafetyChecks: true,
    failedCreationRemedy: false,
  });
  try {
    const seqs = batch.map(() => ctx.getSequence());
    const run = async (seq, ids, tokens, t0) => {
      let first = null;
      let count = 0;
      for await (const _ of seq.evaluate(ids, { temperature: 0 })) {
        if (first === null) first = performance.now() - t0;
        if (++count >= tokens) break;
      }
      return { first, end: performance.now() - t0, tokens: count };
    };
    await run(seqs[0], warmIds, 4, performance.now());
    await seqs[0].clearHistory();
    const t0 = performance.now();
    const s = await Promise.all(seqs.map((seq, i) => run(seq, batch[i], targets[i], t0)));
    return { n, streams: s, ...summarise(s) };
  } finally {
    await ctx.dispose();
  }
}

async function llamaRounds(llama, gguf, lutraRounds, warmIds) {
  const model = await llama.loadModel({ modelPath: gguf, gpuLayers: 0, defaultContextFlashAttention: false });
  try {
    // The same thread count as lutra; then, for scale, 1 thread (no spin barrier between threads
    // for other processes on the machine to stall).
    const byThreads = {};
    for (const t of threads > 1 ? [threads, 1] : [threads]) {
      byThreads[t] = [];
      for (const r of lutraRounds) {
        byThreads[t].push(await llamaRound(model, r.prompts, r.streams.map((s) => s.tokens), t, warmIds));
        say(`llama.cpp ${t} thread${t > 1 ? 's' : ''}, ${r.n} stream${r.n > 1 ? 's' : ''}: ${line(byThreads[t].at(-1))}`);
      }
    }
    return { rounds: byThreads[threads], oneThread: threads > 1 ? byThreads[1] : null };
  } finally {
    await model.dispose();
  }
}

// ── figures ───────────────────────────────────────────────────────────────────────────────
function summarise(s) {
  const after = s.reduce((a, x) => a + x.tokens - 1, 0);
  const span = Math.max(...s.map((x) => x.end)) - Math.min(...s.map((x) => x.first));
  const per = s.map((x) => (x.end > x.first ? ((x.tokens - 1) * 1000) / (x.end - x.first) : NaN));
  return {
    tokens: s.reduce((a, x) => a + x.tokens, 0),
    aggregate: span > 0 ? (after * 1000) / span : NaN,
    ttftMean: s.reduce((a, x) => a + x.first, 0) / s.length,
    ttftMax: Math.max(...s.map((x) => x.first)),
    perMean: per.reduce((a, x) => a + x, 0) / per.length,
    perMin: Math.min(...per),
  };
}
const f = (x, d = 1) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(d) : '—');
const line = (r) => `aggregate ${f(r.aggregate)} tok/s, TTFT mean ${f(r.ttftMean, 0)} ms max ${f(r.ttftMax, 0)} ms, per stream ${f(r.perMean)} (min ${f(r.perMin)}) tok/s, ${r.tokens} tokens`;

// ── run ───────────────────────────────────────────────────────────────────────────────────
const load = (l) => l.map((x) => x.toFixed(2)).join(', ');

async function measure() {
  const loadStart = loadavg();
  const date = new Date().toISOString();
  const command = ['npm run bench:serve --', ...process.argv.slice(2)].join(' ').replace(/ --$/, '');
  say(`load average at the start: ${load(loadStart)}`);
  tmp = mkdtempSync(join(tmpdir(), 'lutra-bench-serve-'));
  const { llama, version } = await llamaCpp();
  const results = [];
  for (const name of models) {
    const spec = MODELS[name];
    let dir;
    if (name === 'demo') dir = join(ROOT, 'models', 'demo');
    else {
      const fixture = join(tmp, `${name}-hf`);
      dir = join(tmp, `${name}-int8-32`);
      lutra(['fixture', '--shape', name, '--out', fixture]);
      lutra(['convert', '--model', fixture, '--out', dir, '--quant', 'all=int8:32']);
      rmSync(fixture, { recursive: true, force: true });
    }
    const gguf = join(tmp, `${name}-${spec.ggufType}.gguf`);
    lutra(['export-gguf', '--model', dir, '--out', gguf, '--type', spec.ggufType]);
    const prompts = await makePrompts(dir, parallel + streams.reduce((a, b) => a + b, 0));
    const warmIds = prompts[0];
    say(`${spec.label}: lutra serve`);
    const lutraR = await lutraRounds(dir, prompts);
    say(`${spec.label}: node-llama-cpp ${version}`);
    const { rounds: llamaR, oneThread } = await llamaRounds(llama, gguf, lutraR, warmIds);
    results.push({ name, spec, lutra: lutraR, llama: llamaR, oneThread });
    rmSync(gguf, { force: true });
  }
  const loadEnd = loadavg();
  say(`load average at the end: ${load(loadEnd)}`);
  const machine = { cores: availableParallelism(), cpu: cpus()[0]?.model ?? 'unknown CPU', node: process.version };
  return { date, command, machine, llamaCppVersion: version, loadStart, loadEnd, threads, parallel, context, maxTokens, promptTokens, results };
}

function writeAtomic(path, text) {
  const t = `${path}.tmp-${process.pid}`;
  writeFileSync(t, text);
  renameSync(t, path);
}

let run;
if (o.render) {
  if (!existsSync(o.render)) fail(`--render ${o.render}: not found`);
  run = JSON.parse(readFileSync(o.render, 'utf8'));
} else {
  run = await measure();
  if (o.save) writeAtomic(o.save, JSON.stringify(run) + '\n');
}

// ── the section ───────────────────────────────────────────────────────────────────────────
const ms = (r) => `${f(r.ttftMean, 0)} / ${f(r.ttftMax, 0)}`;
const per = (r) => `${f(r.perMean)} (${f(r.perMin)})`;
const { results, machine } = run;
const rows = results.flatMap(({ spec, lutra: L, llama: C, oneThread: C1 }) =>
  L.map((l, i) => {
    const c = C[i];
    const one = C1 ? ` ${f(C1[i].aggregate)} | ${ms(C1[i])} |` : '';
    return `| ${spec.label} | ${spec.lutraWeights} / ${spec.ggufType.toUpperCase()} | ${l.n} | ${f(l.aggregate)} | ${f(c.aggregate)} | ${f(l.aggregate / c.aggregate, 2)}× | ${ms(l)} | ${ms(c)} | ${per(l)} | ${per(c)} | ${l.tokens} |${one}`;
  }),
);
const oneCols = run.threads > 1 ? ' llama.cpp 1 thread aggregate decode tok/s | llama.cpp 1 thread TTFT mean / max ms |' : '';
const section = [
  HEADING,
  '',
  `Generated by \`tools/bench/serve.mjs\`; command \`${run.command}\`, run ${run.date.slice(0, 16).replace('T', ' ')} UTC on ${machine.cores} cores (${machine.cpu}), Node ${machine.node}, node-llama-cpp ${run.llamaCppVersion}.`,
  '',
  `**Machine load:** load average (1, 5, 15 min) ${load(run.loadStart)} at the start and ${load(run.loadEnd)} at the end. ` +
    (run.loadStart[0] < 1
      ? `The machine was otherwise idle when the run started (the load at the end is mostly the benchmark's own); it is a single run, so compare the two engines within a row.`
      : `Other processes shared these ${machine.cores} cores during the run, so every figure is noisy and lower than on a quiet machine; compare the two engines within a row, not with the standard table.`),
  '',
  `lutra: \`lutra serve --parallel ${run.parallel} --threads ${run.threads} --context ${run.context}\` in a child process, driven over HTTP (POST /v1/completions, \`stream: true\`, ` +
    `greedy, \`max_tokens\` ${run.maxTokens}, the prompt as ${run.promptTokens} token ids; a warm-up of ${run.parallel} short streams first, so every session exists). ` +
    `llama.cpp: node-llama-cpp ships no HTTP server, so it runs in the benchmark's own process: one context with N sequences ` +
    `(\`createContext({sequences: N, contextSize: ${run.context}, threads: ${run.threads}})\`, CPU, F16 KV cache, flash attention off), each sequence \`evaluate(prompt, {temperature: 0})\` ` +
    'on the same ids, concurrently (node-llama-cpp batches the sequences into one llama_decode per step), after a short warm-up; it generates exactly as many tokens per prompt as lutra did. ' +
    `Both use ${run.threads} threads.`,
  '',
  'Weights: the demo model runs in lutra as its bf16 checkpoint and in llama.cpp as an F16 export (`lutra export-gguf --type f16`: the same 2 bytes per weight, ' +
    'every bf16 value exact in f16 except those below f16\'s normal range, 6.1e-5, which lose low bits; f32 would double what llama.cpp reads per token). ' +
    'The gemma-3-270m shape is a random-weight fixture (speed does not depend on values) converted with `--quant all=int8:32` and exported as Q8_0, the same bytes block for block.',
  '',
  `Each round starts N streams at once, each with its own ${run.promptTokens}-token prompt (a different first word after <bos>; no prompt is sent twice, so lutra's prompt cache ` +
    'can reuse only the <bos> token). TTFT = time from the start of the round to a stream\'s first streamed text (prefill included, waiting for the other streams\' prefills too). ' +
    "Aggregate decode tok/s = tokens generated after each stream's first token, summed, over the wall time from the first stream's first token to the last stream's end. " +
    "Per-stream decode tok/s = a stream's tokens after its first over its own first-token-to-end time (mean over streams, lowest in brackets).",
  '',
  `| model | weights (lutra / llama.cpp) | streams | lutra aggregate decode tok/s | llama.cpp aggregate decode tok/s | lutra / llama.cpp | lutra TTFT mean / max ms | llama.cpp TTFT mean / max ms | lutra per-stream tok/s mean (min) | llama.cpp per-stream tok/s mean (min) | tokens generated (each engine) |${oneCols}`,
  `|---|---|---|---|---|---|---|---|---|---|---|${run.threads > 1 ? '---|---|' : ''}`,
  ...rows,
  '',
  "lutra's server runs each request in its own session; the decode steps of concurrent sessions share one forward pass (batched decode, on by default), " +
    "prefills run per session between decode passes. llama.cpp evaluates the next token of all N sequences in one batch per step." +
    (run.threads > 1
      ? ` The last two columns: llama.cpp again on the same prompts and token counts with 1 thread, for scale. On a loaded machine llama.cpp's ${run.threads}-thread ` +
        'compute waits for its peer thread at a spinning barrier after every operation, so every time other processes deschedule one thread the other burns its time slice; with 1 thread there is no barrier. ' +
        "lutra's worker threads sleep (Atomics.wait) after a short spin."
      : ''),
  '',
].join('\n');

process.stdout.write(section);
if (!o['no-write']) {
  const old = existsSync(o.out) ? readFileSync(o.out, 'utf8') : '# lutra benchmarks\n';
  const start = old.search(/^## Serving[ \t]*$/m);
  let next;
  if (start >= 0) {
    const rest = old.slice(start + HEADING.length);
    const after = rest.search(/^## /m);
    next = old.slice(0, start) + section + (after >= 0 ? '\n' + rest.slice(after) : '');
  } else {
    const end = old.indexOf(STANDARD_END);
    const at = end >= 0 ? end + STANDARD_END.length : old.length;
    next = `${old.slice(0, at).replace(/\n*$/, '')}\n\n${section}\n${old.slice(at).replace(/^\n*/, '')}`;
  }
  writeAtomic(o.out, next);
  say(`wrote the "Serving" section of ${o.out}`);
}
cleanup();
process.exit(0);
