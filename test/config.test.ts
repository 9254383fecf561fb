import { test } from 'node:test';
import assert from 'node:assert/strict';
import { resolveModelConfig as resolveAny } from '../src/arch/registry.js';
import type { Gemma3Config } from '../src/arch/config-types.js';

const resolveModelConfig = (raw: Record<string, unknown>, file?: string) => resolveAny(raw, file) as Gemma3Config;
import { LutraError } from '../src/util/errors.js';

test('sparse 4B multimodal config resolves to the spec values', () => {
  // The text_config of google/gemma-3-4b-it holds only these keys.
  const raw = {
    architectures: ['Gemma3ForConditionalGeneration'],
    model_type: 'gemma3',
    eos_token_id: [1, 106],
    text_config: {
      hidden_size: 2560,
      intermediate_size: 10240,
      model_type: 'gemma3_text',
      num_hidden_layers: 34,
      rope_scaling: { factor: 8.0, rope_type: 'linear' },
      sliding_window: 1024,
    },
  };
  const c = resolveModelConfig(raw);
  assert.equal(c.numHeads, 8);
  assert.equal(c.numKvHeads, 4);
  assert.equal(c.headDim, 256);
  assert.equal(c.queryPreAttnScalar, 256);
  assert.equal(c.vocabSize, 262208);
  assert.equal(c.maxPositions, 131072);
  assert.equal(c.slidingWindow, 1024);
  assert.deepEqual(c.ropeGlobal, { theta: 1_000_000, linearFactor: 8, rotaryFraction: 1 });
  assert.deepEqual(c.ropeLocal, { theta: 10_000, linearFactor: 1, rotaryFraction: 1 });
  assert.deepEqual(c.eosTokenIds, [1, 106]);
  const globals = c.layerTypes.flatMap((t, i) => (t === 'full_attention' ? [i] : []));
  assert.deepEqual(globals, [5, 11, 17, 23, 29]);
  assert.equal(c.layerTypes[33], 'sliding_attention');
});

test('legacy "type" spelling and new rope_parameters both work', () => {
  const legacy = resolveModelConfig({ model_type: 'gemma3_text', num_hidden_layers: 6, rope_scaling: { type: 'linear', factor: 4 } });
  assert.equal(legacy.ropeGlobal.linearFactor, 4);
  const modern = resolveModelConfig({
    model_type: 'gemma3_text',
    num_hidden_layers: 6,
    rope_parameters: {
      full_attention: { rope_type: 'linear', rope_theta: 1e6, factor: 8 },
      sliding_attention: { rope_type: 'default', rope_theta: 1e4 },
    },
  });
  assert.deepEqual(modern.ropeGlobal, { theta: 1e6, linearFactor: 8, rotaryFraction: 1 });
  assert.deepEqual(modern.ropeLocal, { theta: 1e4, linearFactor: 1, rotaryFraction: 1 });
});

test('layer_types wins over the pattern; pattern keys are honoured', () => {
  const c = resolveModelConfig({ model_type: 'gemma3_text', num_hidden_layers: 3, layer_types: ['full_attention', 'sliding_attention', 'full_attention'] });
  assert.deepEqual(c.layerTypes, ['full_attention', 'sliding_attention', 'full_attention']);
  const p = resolveModelConfig({ model_type: 'gemma3_text', num_hidden_layers: 4, sliding_window_pattern: 2 });
  assert.deepEqual(p.layerTypes, ['sliding_attention', 'full_attention', 'sliding_attention', 'full_attention']);
});

test('270m-style config keeps its explicit values', () => {
  const c = resolveModelConfig({
    model_type: 'gemma3_text', vocab_size: 262144, hidden_size: 640, intermediate_size: 2048, num_hidden_layers: 18,
    num_attention_heads: 4, num_key_value_heads: 1, head_dim: 256, sliding_window: 512, max_position_embeddings: 32768,
  });
  assert.equal(c.vocabSize, 262144);
  assert.deepEqual(c.layerTypes.flatMap((t, i) => (t === 'full_attention' ? [i] : [])), [5, 11, 17]);
  assert.equal(c.ropeGlobal.linearFactor, 1);
});

test('a config that is not Gemma 3 is refused with the file and the field named', () => {
  assert.throws(() => resolveModelConfig({ model_type: 'llama' }, '/x/config.json'), (e: unknown) => {
    assert.ok(e instanceof LutraError);
    assert.match(e.message, /\/x\/config\.json: model_type is "llama"/);
    return true;
  });
  assert.throws(() => resolveModelConfig({ model_type: 'gemma3_text', num_attention_heads: 6, num_key_value_heads: 4 }), /multiple of num_key_value_heads/);
  assert.throws(() => resolveModelConfig({ model_type: 'gemma3_text', hidden_size: 'big' }), /hidden_size" must be a number/);
});
