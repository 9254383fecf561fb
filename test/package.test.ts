import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, truncateSync, statSync, readdirSync, cpSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { convert, encodeTensor } from '../src/quant/convert.js';
import { buildPlan, formatFor } from '../src/quant/plan.js';
import { architectureOf } from '../src/arch/registry.js';
import { Checkpoint } from '../src/io/checkpoint.js';
import { PackageSource, storedBytes } from '../src/io/package.js';
import { type WeightSource } from '../src/model/forward.js';
import { Gemma3Model } from '../src/arch/gemma3/model.js';
import type { CausalLM } from '../src/model/forward.js';
import type { Gemma3Config } from '../src/arch/config-types.js';
import { ReferenceBackend } from '../src/backend/reference/index.js';
import { Session } from '../src/runtime/session.js';
import { loadModel } from '../src/runtime/load.js';
import type { WeightTensor } from '../src/model/weight.js';
import { tinyFixture, maxAbsDiff, tokenSequence } from './helpers.js';

const fx = await tinyFixture(5);
const ids = tokenSequence(24, 3);
const logits = (model: CausalLM) => new Session(model, { contextLength: 64 }).prefill(ids, { all: true });
const reference = logits(loadModel(fx.dir, new ReferenceBackend(), { tokenizer: false }).model);

/** The same conversion without touching disk: the checkpoint's tensors encoded on load. */
function inMemory(quant: string[]): WeightSource {
  const ck = Checkpoint.open(fx.dir);
  const plan = buildPlan({ quant, weightThreshold: 0 });
  const embedFmt = formatFor(plan, 'embed', ck.shape('model.embed_tokens.weight'));
  const headFmt = formatFor(plan, 'lmhead', ck.shape('model.embed_tokens.weight'));
  const parts = new Map(architectureOf(ck.config).tensors(ck.config, ck).map((t) => [t.name, t.part]));
  const enc = (name: string, from = name): WeightTensor => {
    const w = { ...ck.load(from), name };
    const f = (name === 'lm_head.weight' ? headFmt : formatFor(plan, parts.get(name) ?? null, w.shape)) ?? w.format;
    const s = encodeTensor(w, f);
    return { ...w, format: f, data: s.data, scales: s.scales, table: s.table };
  };
  return {
    dir: fx.dir, config: ck.config, rawConfig: ck.rawConfig,
    has: (n) => ck.has(n) || (n === 'lm_head.weight' && JSON.stringify(headFmt) !== JSON.stringify(embedFmt)),
    names: () => ck.names(), shape: (n) => ck.shape(n === 'lm_head.weight' ? 'model.embed_tokens.weight' : n), format: (n) => ck.format(n),
    load: (n) => (n === 'lm_head.weight' ? enc(n, 'model.embed_tokens.weight') : enc(n)),
    embedScale: 8, separateLmHead: true, close: () => ck.close(),
  };
}

const configs: string[][] = [
  ['all=f16'],
  ['all=int8:32'],
  ['attn=int8:c', 'ffn=int8:t', 'lmhead=int4:32'],
  ['all=int4:32'],
  ['attn=lut4:4', 'ffn=lut4:4', 'lmhead=lut6:512'],
  ['ffn=lut3:0', 'embed=lut2:8', 'lmhead=lut8:4096'],
];

for (const quant of configs) {
  test(`package round-trip: ${quant.join(' ')} loads to the same logits as converting in memory`, async () => {
    const out = join(fx.root, quant.join('_').replace(/[^\w]/g, '-'));
    const meta = await convert({ src: fx.dir, out, plan: buildPlan({ quant, weightThreshold: 0 }), command: 'test' });
    const pkg = loadModel(out, new ReferenceBackend(), { tokenizer: false }).model;
    const mem = new Gemma3Model(pkg.cfg as Gemma3Config, new ReferenceBackend(), inMemory(quant));
    const a = logits(pkg);
    assert.equal(maxAbsDiff(a, logits(mem)), 0);
    // Size on disk is what the formats imply (headers and tokenizer files aside).
    const shards = readdirSync(out).filter((f) => f.endsWith('.safetensors'));
    const onDisk = shards.reduce((s, f) => s + statSync(join(out, f)).size, 0);
    const src = new PackageSource(out);
    const implied = meta.tensors.reduce((s, t) => s + storedBytes(t.shape, src.format(t.name)), 0);
    src.close();
    assert.ok(onDisk >= implied && onDisk < implied * 1.02, `on disk ${onDisk}, implied ${implied}`);
    // 8/16-bit formats stay close to the bf16 original; every format gives finite logits.
    assert.ok(a.every(Number.isFinite));
    const d = maxAbsDiff(a, reference);
    // int8:32 measured 1.06 here: the max over 24 × 262 144 logits whose spread is ~10.
    if (quant.every((q) => /=(f16|int8:)/.test(q))) assert.ok(d < 2, `max |Δlogit| vs the bf16 original ${d}`);
  });
}

test('converting a package again with the same formats reproduces it byte for byte', async () => {
  const a = join(fx.root, 'again-a');
  const b = join(fx.root, 'again-b');
  await convert({ src: fx.dir, out: a, plan: buildPlan({ quant: ['ffn=lut4:4', 'attn=int8:32'], weightThreshold: 0 }), command: 'test' });
  await convert({ src: a, out: b, plan: buildPlan({ quant: [], weightThreshold: 0 }), command: 'test' });
  assert.ok(readFileSync(join(a, 'model-00001-of-00001.safetensors')).equals(readFileSync(join(b, 'model-00001-of-00001.safetensors'))));
});

test('a tensor made a piece of rows at a time (as a table over 4 GiB must be) is stored byte for byte as one made whole', async () => {
  // Every matrix streamed: rows read from the checkpoint file, encoded per piece, scales gathered.
  for (const quant of [['all=int8:32'], ['attn=int4:c', 'ffn=lut4:4', 'embed=f16']]) {
    const [whole, pieces] = ['whole', 'pieces'].map((k) => join(fx.root, `stream-${k}-${quant.join('_').replace(/[^\w]/g, '-')}`));
    const plan = buildPlan({ quant, weightThreshold: 0 });
    await convert({ src: fx.dir, out: whole, plan, command: 'test' });
    await convert({ src: fx.dir, out: pieces, plan, command: 'test', streamWeights: 1 });
    const shard = (d: string) => readFileSync(join(d, 'model-00001-of-00001.safetensors'));
    assert.ok(shard(whole).equals(shard(pieces)), quant.join(' '));
  }
});

test('conversion is deterministic', async () => {
  const a = join(fx.root, 'det-a');
  const b = join(fx.root, 'det-b');
  for (const out of [a, b]) await convert({ src: fx.dir, out, plan: buildPlan({ quant: ['all=lut5:2'], weightThreshold: 0 }), command: 'test' });
  assert.ok(readFileSync(join(a, 'model-00001-of-00001.safetensors')).equals(readFileSync(join(b, 'model-00001-of-00001.safetensors'))));
});

test('a truncated shard, a missing tensor and an unknown format are named', async () => {
  const good = join(fx.root, 'err-src');
  await convert({ src: fx.dir, out: good, plan: buildPlan({ quant: ['ffn=int8:32'], weightThreshold: 0 }), command: 'test' });
  const trunc = join(fx.root, 'err-trunc');
  cpSync(good, trunc, { recursive: true });
  const shard = join(trunc, 'model-00001-of-00001.safetensors');
  truncateSync(shard, statSync(shard).size - 100);
  assert.throws(() => new PackageSource(trunc), /err-trunc\/model-00001-of-00001\.safetensors: truncated: tensor ".*" ends at byte/);

  const missing = join(fx.root, 'err-missing');
  cpSync(good, missing, { recursive: true });
  const metaPath = join(missing, 'meta.yaml');
  writeFileSync(metaPath, readFileSync(metaPath, 'utf8').replace('- name: model.norm.weight', '- name: model.nrom.weight'));
  assert.throws(() => new PackageSource(missing), /err-missing\/meta\.yaml: lists tensor "model\.nrom\.weight" but no shard holds "model\.nrom\.weight"/);

  const unknown = join(fx.root, 'err-format');
  cpSync(good, unknown, { recursive: true });
  const m2 = join(unknown, 'meta.yaml');
  writeFileSync(m2, readFileSync(m2, 'utf8').replace('format: int8:32', 'format: int3:32'));
  assert.throws(() => new PackageSource(unknown), /err-format\/meta\.yaml: tensor ".*": unknown format "int3:32"/);
  assert.ok(!existsSync(join(fx.root, '.err-src.lutra-tmp-' + process.pid)));
});

test.after(() => fx.cleanup());
