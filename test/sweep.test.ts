// `lutra sweep`: the configs file's checks, and a whole sweep of the tiny fixture with a
// deliberately broken configuration among working ones, through the API and through the CLI.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LutraError } from '../src/util/errors.js';
import { parseDataset } from '../src/verify/dataset.js';
import { parseSweepConfigs } from '../src/sweep/config.js';
import { runSweep } from '../src/sweep/sweep.js';
import { formatMarkdown } from '../src/sweep/table.js';
import { tinyFixture } from './helpers.js';

const MAIN = resolve(fileURLToPath(import.meta.url), '..', '..', 'src', 'cli', 'main.js');
const fx = await tinyFixture(0);
test.after(() => fx.cleanup());

const CONFIGS = `
- name: f32
  quant: [attn=f32, ffn=f32]
- name: int9
  quant: [ffn=int9:4]
- name: int8-c
  quant: [attn=int8:c, ffn=int8:c]
- name: f16
  quant: [attn=f16, ffn=f16]
  numerics: fp16
`;
const PROMPTS = '{"id": "a", "prompt": "In the beginning", "category": "kjv", "risk": "low"}\n{"id": "b", "prompt": "Tell me a fortune.", "risk": "high"}\n';

/** Bytes of the shards a package's index names. */
function shardBytes(dir: string): number {
  const index = JSON.parse(readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8')) as { weight_map: Record<string, string> };
  return [...new Set(Object.values(index.weight_map))].reduce((a, f) => a + statSync(join(dir, f)).size, 0);
}

test('a bad configs file is an error naming the file and the entry', () => {
  const bad = (text: string, re: RegExp) => assert.throws(() => parseSweepConfigs(text, 'cfg.yaml'), (e: unknown) => e instanceof LutraError && re.test(e.message), text);
  bad('name: x', /^cfg\.yaml: expected a non-empty YAML list/);
  bad('- name: a\n  quant: [all=f32]\n- quant: [ffn=int8:c]', /^cfg\.yaml: entry 2: "name" must be/);
  bad('- name: a\n  quant: [all=f32]\n- name: a\n  quant: [ffn=int8:c]', /^cfg\.yaml: entry 2 \("a"\): the name is already used/);
  bad('- name: a\n  qaunt: [all=f32]', /^cfg\.yaml: entry 1 \("a"\): unknown key "qaunt"/);
  bad('- name: a\n  quant: {ffn: int8}', /^cfg\.yaml: entry 1 \("a"\): "quant" must be a list/);
  bad('- name: a\n  quant: [all=f16]\n  numerics: fp8', /^cfg\.yaml: entry 1 \("a"\): "numerics" fp8: expected f32 or fp16/);
  bad('- name: a\n  quant: [all=f16]\n  fp16-scale: big', /"fp16-scale" must be auto or a number/);
  bad('- name: a', /entry 1 \("a"\): no quantization given/);
  bad('- [unclosed', /^cfg\.yaml: not valid YAML/);
  const ok = parseSweepConfigs('- name: s\n  lut2: 4,4\n  lut3: 6\n- name: h\n  quant: all=f16\n  fp16-scale: auto\n  numerics: fp16', 'cfg.yaml');
  assert.deepEqual(ok[0], { name: 's', quant: [], lut2: '4,4', lut3: '6', fp16Scale: '1', numerics: 'f32' });
  assert.deepEqual(ok[1], { name: 'h', quant: ['all=f16'], fp16Scale: 'auto', numerics: 'fp16' });
  assert.equal(parseSweepConfigs('- name: a\n  quant: [all=f16]\n  numerics: FP16, clamp', 'c')[0].numerics, 'fp16,clamp');
});

test('sweep of the tiny fixture: a failed row among working ones, f32 gives KL 0, sizes are the shard bytes', async () => {
  const out = join(fx.root, 'sweep-api');
  const res = await runSweep({
    model: fx.dir, configs: parseSweepConfigs(CONFIGS, 'cfg.yaml'), prompts: parseDataset(PROMPTS, 'p.jsonl'), outDir: out,
    maxTokens: 4, backend: 'wasm', layers: true, template: false, prefillBatch: 64,
    timing: { prefill: 4, decode: 4 }, keepPackages: true,
  });
  assert.deepEqual(res.rows.map((r) => r.name), ['f32', 'int9', 'int8-c', 'f16']);
  const [f32, int9, int8, f16] = res.rows;

  // The broken configuration fails in its own row, with the format named, and nothing else.
  assert.match(int9.error ?? '', /^convert: .*unknown format "int9:4"/);
  assert.equal(int9.summary, null);
  assert.equal(int9.size_bytes, null);

  for (const r of [f32, int8, f16]) {
    assert.equal(r.error, null, `${r.name}: ${r.error}`);
    assert.equal(r.size_bytes, shardBytes(join(out, 'packages', r.name)), `${r.name}: size`);
    assert.equal(r.summary!.count, 2);
    assert.equal(r.summary!.steps, 8);
    assert.equal(r.prompts.length, 2);
    assert.ok(r.decode_tok_s! > 0 && r.prefill_tok_s! > 0, `${r.name}: timing`);
  }
  // bf16 weights stored as f32 hold the same values. The wasm f32 and bf16 kernels sum in a
  // different order, so the logits agree to rounding (exactly 0 on the reference backend: CLI test).
  assert.ok(f32.summary!.kl_mean < 1e-9, `f32 KL ${f32.summary!.kl_mean}`);
  assert.equal(f32.summary!.match_rate, 1);
  assert.equal(f32.summary!.first_divergence_min, null);
  assert.ok(f32.summary!.min_layer_cosine! > 1 - 1e-6);
  // int8 per channel is close but not exact, and smaller.
  assert.ok(int8.summary!.kl_mean > 0 && int8.summary!.kl_mean < 0.05, `int8 KL ${int8.summary!.kl_mean}`);
  assert.ok(int8.size_bytes! < f32.size_bytes!);
  assert.equal(int8.activations, 'q8');
  assert.equal(f32.activations, null);
  // fp16 numerics: recorded in the package, so the harness and the timing both run in it.
  assert.match(readFileSync(join(out, 'packages', 'f16', 'meta.yaml'), 'utf8'), /^numerics: fp16$/m);
  assert.equal(f16.convert, '--quant attn=f16 --quant ffn=f16 --numerics fp16');
  assert.ok(f16.summary!.kl_mean > 0 && f16.summary!.kl_mean < 1e-3, `fp16 KL ${f16.summary!.kl_mean}`);
  assert.deepEqual(int8.prompts.map((p) => [p.id, p.category, p.risk]), [['a', 'kjv', 'low'], ['b', null, 'high']]);

  const md = formatMarkdown(res);
  assert.match(md, /^\| configuration \| size MB \| KL \| corr \| match \| first div \(prompts\) \| min layer cos \(at layer\) \| min single-layer cos \(at layer\) \| decode tok\/s \|/);
  assert.match(md, /\| f32 \| [\d.]+ \| [\d.e-]+ \| 1\.0000 \| 100\.0% \| none \(0\/2\) \| 1\.0000 \(\d\) \| 1\.0000 \(\d\) \| \d+ \|/);
  assert.match(md, /`int9`: --quant ffn=int9:4; numerics f32; \*\*failed\*\*: convert: /);
});

test('lutra sweep CLI: writes sweep.md and sweep.json (no temporary files left), exits 1 when a configuration failed; a bad configs file is a one-line error', () => {
  const cfg = join(fx.root, 'cli.yaml');
  const data = join(fx.root, 'cli.jsonl');
  const out = join(fx.root, 'sweep-cli');
  writeFileSync(cfg, '- name: f32\n  quant: [attn=f32, ffn=f32]\n- name: bad\n  quant: [ffn=lut9:4]\n');
  writeFileSync(data, PROMPTS);
  const run = (args: string[]) => spawnSync(process.execPath, [MAIN, 'sweep', '--model', fx.dir, '--dataset', data, ...args], { encoding: 'utf8' });
  const r = run(['--configs', cfg, '--out-dir', out, '--max-tokens', '3', '--no-timing', '--backend', 'reference', '--no-template']);
  // A failed configuration makes the exit status 1, after every row is measured and written.
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /lutra sweep: 1 of 2 configurations failed \(bad\)/);
  assert.match(run(['--help']).stdout, /exits with status 1 when any configuration failed/);
  assert.match(r.stdout, /^configuration\s+size MB/);
  assert.match(r.stdout, /\nbad .*FAILED: convert: .*unknown format "lut9:4"/);
  assert.deepEqual(readdirSync(out).sort(), ['sweep.json', 'sweep.md']);
  const json = JSON.parse(readFileSync(join(out, 'sweep.json'), 'utf8'));
  assert.equal(json.complete, true);
  // The reference backend decodes bf16 and f32 rows to the same f32 values and sums in f64: exactly equal.
  assert.equal(json.rows[0].summary.kl_mean, 0);
  assert.equal(json.rows[0].summary.match_rate, 1);
  assert.equal(json.rows[0].decode_tok_s, null);
  assert.match(readFileSync(join(out, 'sweep.md'), 'utf8'), /decode tok\/s: not measured/);

  writeFileSync(cfg, '- name: f32\n  quant: [attn=f32]\n- name: x\n  bits: 4\n');
  const e = run(['--configs', cfg, '--out-dir', join(fx.root, 'sweep-bad')]);
  assert.equal(e.status, 1);
  assert.equal(e.stderr, `lutra: error: ${cfg}: entry 2 ("x"): unknown key "bits"; expected name, quant, lut1, lut2, lut3, fp16-scale, numerics\n`);
  assert.equal(existsSync(join(fx.root, 'sweep-bad')), false);
});
