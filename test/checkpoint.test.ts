import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { Checkpoint, normaliseTensorName } from '../src/io/checkpoint.js';
import { writeSafetensors, type TensorToWrite } from '../src/io/safetensors.js';
import { loadModel } from '../src/runtime/load.js';
import { ReferenceBackend } from '../src/backend/reference/index.js';
import { Session } from '../src/runtime/session.js';
import { bf16BitsToF32, f32ToF16Bits } from '../src/util/half.js';
import { tinyFixture, maxAbsDiff, tokenSequence } from './helpers.js';

const fx = await tinyFixture(3);
const ids = tokenSequence(40, 11);

function logitsOf(dir: string): Float32Array {
  const { model } = loadModel(dir, new ReferenceBackend(), { tokenizer: false });
  return new Session(model, { contextLength: 64 }).prefill(ids, { all: true });
}
const reference = logitsOf(fx.dir);

/** Re-encode the fixture's bf16 tensors as another dtype. */
function reencode(name: string, dtype: 'f32' | 'f16', src: Checkpoint, outName = name): TensorToWrite {
  const shape = src.shape(name);
  return {
    name: outName,
    dtype,
    shape,
    bytes: () => {
      const w = src.load(name);
      const u16 = new Uint16Array(w.data.buffer, w.data.byteOffset, w.data.byteLength / 2);
      if (dtype === 'f32') return new Uint8Array(Float32Array.from(u16, (h) => bf16BitsToF32(h)).buffer);
      return new Uint8Array(Uint16Array.from(u16, (h) => f32ToF16Bits(bf16BitsToF32(h))).buffer);
    },
  };
}

function copyTokenizer(to: string) {
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(fx.dir, f), join(to, f));
}

test('name normalisation covers both multimodal schemes and skips towers', () => {
  assert.equal(normaliseTensorName('language_model.model.layers.0.mlp.up_proj.weight'), 'model.layers.0.mlp.up_proj.weight');
  assert.equal(normaliseTensorName('model.language_model.norm.weight'), 'model.norm.weight');
  assert.equal(normaliseTensorName('language_model.lm_head.weight'), 'lm_head.weight');
  assert.equal(normaliseTensorName('vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight'), null);
  assert.equal(normaliseTensorName('model.multi_modal_projector.mm_input_projection_weight'), null);
});

test('f32 weights in two shards with an index, multimodal names and config, give the same logits', async () => {
  const src = Checkpoint.open(fx.dir);
  const dir = join(fx.root, 'sharded');
  mkdirSync(dir);
  const names = src.names();
  const half = Math.ceil(names.length / 2);
  const shards = [names.slice(0, half), names.slice(half)];
  const weightMap: Record<string, string> = {};
  for (const [i, group] of shards.entries()) {
    const file = `model-0000${i + 1}-of-00002.safetensors`;
    const tensors = group.map((n) => reencode(n, 'f32', src, 'language_model.' + n));
    if (i === 1) {
      // A vision tensor that must be skipped.
      tensors.push({ name: 'vision_tower.vision_model.post_layernorm.weight', dtype: 'f32', shape: [3], bytes: () => new Uint8Array(12) });
      weightMap['vision_tower.vision_model.post_layernorm.weight'] = file;
    }
    for (const t of tensors) weightMap[t.name] = file;
    await writeSafetensors(join(dir, file), tensors);
  }
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }));
  const text = JSON.parse(readFileSync(join(fx.dir, 'config.json'), 'utf8'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ model_type: 'gemma3', architectures: ['Gemma3ForConditionalGeneration'], eos_token_id: [1, 106], text_config: text }));
  copyTokenizer(dir);
  src.close();
  // bf16 → f32 is exact, and the embedding scale (sqrt 64 = 8) is exact in both dtypes.
  assert.ok(maxAbsDiff(logitsOf(dir), reference) <= 1e-5);
});

test('f16 weights load and agree to f16 rounding', async () => {
  const src = Checkpoint.open(fx.dir);
  const dir = join(fx.root, 'f16');
  mkdirSync(dir);
  await writeSafetensors(join(dir, 'model.safetensors'), src.names().map((n) => reencode(n, 'f16', src)));
  copyFileSync(join(fx.dir, 'config.json'), join(dir, 'config.json'));
  copyTokenizer(dir);
  src.close();
  const d = maxAbsDiff(logitsOf(dir), reference);
  assert.ok(d <= 0.05, `max |Δlogit| ${d}`);
});

test('a shard listed in the index but missing is named', () => {
  const dir = join(fx.root, 'missing-shard');
  mkdirSync(dir);
  copyFileSync(join(fx.dir, 'config.json'), join(dir, 'config.json'));
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { 'model.norm.weight': 'model-00001-of-00002.safetensors' } }));
  assert.throws(() => Checkpoint.open(dir), /model-00001-of-00002\.safetensors: shard listed in model\.safetensors\.index\.json is missing/);
});

test.after(() => fx.cleanup());
