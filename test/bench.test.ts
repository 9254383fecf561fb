// lutra bench through the CLI on the tiny fixture: the JSON is complete and self-consistent, the
// weight bytes match a count made here from the fixture's shapes, and bad flags fail on one line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { resolve, join } from 'node:path';
import { tinyFixture } from './helpers.js';
import { SHAPES } from '../src/model/fixture.js';

const CLI = resolve('dist/src/cli/main.js');
const fx = await tinyFixture();
test.after(() => fx.cleanup());

function lutra(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Bytes read per token for the tiny shape with `perParam` bytes per matrix element (tied embedding once, f32 norms). */
function expectedWeightBytes(perParam: number): number {
  const { hidden: H, intermediate: I, layers: L, heads, kvHeads, headDim: D, vocab: V } = SHAPES.tiny;
  const perLayer = H * heads * D * 2 + 2 * H * kvHeads * D + 3 * H * I;
  const norms = L * (4 * H + 2 * D) + H;
  return Math.round((V * H + L * perLayer) * perParam) + 4 * norms;
}

const SMALL = ['--prefill', '16', '--decode', '4', '--repeat', '1', '--probe-mib', '64', '--threads', '1', '--llama-threads', '1', '--json'];

function checkResult(r: Record<string, any>, perParam: number) {
  for (const k of ['prefill_tok_s', 'decode_tok_s', 'ms_per_token', 'weight_bytes', 'effective_gbs', 'bandwidth_gbs', 'bandwidth_pct', 'peak_rss_bytes', 'rss_limit_bytes']) {
    assert.ok(Number.isFinite(r[k]) && r[k] > 0, `${k} = ${r[k]}`);
  }
  assert.equal(r.weight_bytes, expectedWeightBytes(perParam));
  assert.ok(Math.abs(r.effective_gbs - (r.weight_bytes * r.decode_tok_s) / 1e9) < 1e-9 * r.effective_gbs + 1e-12);
  assert.ok(Math.abs(r.ms_per_token - 1000 / r.decode_tok_s) < 1e-9 * r.ms_per_token);
  assert.ok(Math.abs(r.bandwidth_pct - (100 * r.effective_gbs) / r.bandwidth_gbs) < 1e-9);
  assert.equal(r.rss_limit_bytes, 1.3 * r.resident_weight_bytes + 300e6);
  assert.equal(r.rss_ok, r.peak_rss_bytes <= r.rss_limit_bytes);
}

test('bench --json on the tiny checkpoint (bf16): finite, consistent, weight bytes from the shapes', () => {
  const r = lutra('bench', '--model', fx.dir, ...SMALL);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim().split('\n').length, 1, 'one JSON object on stdout');
  const j = JSON.parse(r.stdout);
  checkResult(j, 2);
  assert.deepEqual(Object.keys(j.formats), ['bf16']);
  assert.equal(j.threads, 1);
  assert.ok(j.simd === 'relaxed' || j.simd === 'baseline', `simd = ${j.simd}`);
  assert.match(r.stderr, /measuring read bandwidth/);
  // --simd baseline is honoured and reported.
  const b = lutra('bench', '--model', fx.dir, ...SMALL, '--simd', 'baseline');
  assert.equal(b.code, 0, b.stderr);
  assert.equal(JSON.parse(b.stdout).simd, 'baseline');
});

test('bench --vs-llama-cpp on an int8:32 package (exported to Q8_0)', () => {
  const pkg = join(fx.root, 'q8');
  const c = lutra('convert', '--model', fx.dir, '--out', pkg, '--quant', 'all=int8:32');
  assert.equal(c.code, 0, c.stderr);
  const r = lutra('bench', '--model', pkg, ...SMALL, '--vs-llama-cpp', '--rounds', '2');
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  // Two alternating rounds: lutra, llama.cpp, lutra, llama.cpp; the best of each side kept.
  assert.equal(j.rounds, 2);
  assert.equal(j.repetitions, 2);
  assert.deepEqual(r.stderr.match(/round \d of 2|llama\.cpp 1 thread: warm-up|^bench: warm-up/gm), ['round 1 of 2', 'warm-up', 'llama.cpp 1 thread: warm-up', 'round 2 of 2', 'warm-up', 'llama.cpp 1 thread: warm-up'].map((m) => (m === 'warm-up' ? 'bench: warm-up' : m)));
  assert.equal(j.llama_cpp.byThreads.length, 2);
  checkResult(j, 1 + 4 / 32); // a byte per code, an f32 scale per 32
  const l = j.llama_cpp;
  for (const k of ['prefill_tok_s', 'decode_tok_s']) assert.ok(Number.isFinite(l[k]) && l[k] > 0, `llama_cpp.${k}`);
  assert.equal(l.threads, 1);
  assert.equal(l.gguf_type, 'q8_0');
  assert.equal(l.kv, 'f16');
  assert.ok(Math.abs(j.decode_ratio - j.decode_tok_s / l.decode_tok_s) < 1e-12);
  assert.ok(Math.abs(j.prefill_ratio - j.prefill_tok_s / l.prefill_tok_s) < 1e-12);
});

/** A failing command prints exactly one line, naming the flag. */
function assertOneLineError(r: ReturnType<typeof lutra>, pattern: RegExp) {
  assert.equal(r.code, 1, r.stderr);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], pattern);
}

test('bench: bad --model, --prefill 0 and a bf16 model with --vs-llama-cpp fail on one line naming the flag', () => {
  assertOneLineError(lutra('bench', '--model', join(fx.root, 'nope')), /^lutra: error: --model .*nope: not found/);
  assertOneLineError(lutra('bench', '--model', fx.dir, '--prefill', '0'), /^lutra: error: .*--prefill "0"/);
  assertOneLineError(lutra('bench', '--model', fx.dir, '--decode', 'x'), /^lutra: error: .*--decode "x"/);
  assertOneLineError(lutra('bench', '--model', fx.dir, '--simd', 'avx'), /^lutra: error: --simd avx: expected auto, relaxed, baseline$/);
  assertOneLineError(lutra('bench', '--model', fx.dir, '--rounds', '2'), /^lutra: error: --rounds alternates lutra and llama\.cpp: it needs --vs-llama-cpp/);
  assertOneLineError(lutra('bench', '--model', fx.dir, '--rounds', '0', '--vs-llama-cpp'), /^lutra: error: .*--rounds "0"/);
  // Found after loading, so progress lines come first; the error is still one line.
  const long = lutra('bench', '--model', fx.dir, '--prefill', '2040', '--decode', '9');
  assert.equal(long.code, 1);
  assert.match(long.stderr.trim().split('\n').at(-1)!, /^lutra: error: --prefill 2040 \+ --decode 9 exceed .*2048$/);
  const v = lutra('bench', '--model', fx.dir, '--vs-llama-cpp', '--prefill', '4', '--decode', '1');
  assert.equal(v.code, 1);
  assert.match(v.stderr, /^lutra: error: --vs-llama-cpp: .*bf16 \(model\.embed_tokens\.weight/m);
});

test('bench --context: a long prompt in passes of --prefill-batch, llama.cpp with the same KV type (--kv f32: --llama-kv follows)', () => {
  const pkg = join(fx.root, 'q8');
  if (lutra('inspect', pkg).code !== 0) assert.equal(lutra('convert', '--model', fx.dir, '--out', pkg, '--quant', 'all=int8:32').code, 0);
  const args = ['--decode', '4', '--repeat', '1', '--probe-mib', '64', '--threads', '1', '--llama-threads', '1', '--json'];
  const r = lutra('bench', '--model', pkg, '--context', '700', ...args, '--vs-llama-cpp', '--kv', 'f32');
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.prefill_tokens, 700);
  assert.equal(j.prefill_batch, 512);
  assert.equal(j.kv, 'f32');
  assert.equal(j.llama_cpp.kv, 'f32');
  assert.ok(j.decode_tok_s > 0 && j.llama_cpp.decode_tok_s > 0);
  assertOneLineError(lutra('bench', '--model', pkg, '--context', '100', '--prefill', '50'), /^lutra: error: --context N is a prompt of N tokens: give --context or --prefill, not both$/);
  assertOneLineError(lutra('bench', '--model', pkg, '--llama-kv', 'f32'), /^lutra: error: --llama-kv needs --vs-llama-cpp$/);
  assertOneLineError(lutra('bench', '--model', pkg, '--vs-llama-cpp', '--llama-kv', 'q8'), /^lutra: error: --llama-kv q8: expected f16 or f32$/);
});
