import { test } from 'node:test';
import assert from 'node:assert/strict';
import { llamaCppKvSharingProblem, resolveGemma4Config } from '../src/arch/gemma4/config.js';
import { LutraError } from '../src/util/errors.js';

const S = 'sliding_attention';
const F = 'full_attention';

/** Indices where `pred` holds. */
function where<T>(a: T[], pred: (x: T, i: number) => boolean): number[] {
  return a.flatMap((x, i) => (pred(x, i) ? [i] : []));
}

/** Shaped like the E2B multimodal config.json: only fields that differ from the class defaults. */
function e2bRaw(): Record<string, unknown> {
  return {
    architectures: ['Gemma4ForConditionalGeneration'],
    model_type: 'gemma4',
    eos_token_id: [1, 106],
    text_config: {
      model_type: 'gemma4_text',
      hidden_size: 1536,
      intermediate_size: 6144,
      num_hidden_layers: 35,
      num_key_value_heads: 1,
      layer_types: Array.from({ length: 35 }, (_, i) => ((i + 1) % 5 === 0 ? F : S)),
      num_kv_shared_layers: 20,
      use_double_wide_mlp: true,
      final_logit_softcapping: 30.0,
      rope_parameters: {
        full_attention: { partial_rotary_factor: 0.25, rope_theta: 1000000.0, rope_type: 'proportional' },
        sliding_attention: { rope_theta: 10000.0, rope_type: 'default' },
      },
    },
    vision_config: { model_type: 'gemma4_vision' },
    audio_config: { model_type: 'gemma4_audio' },
  };
}

test('E2B (multimodal wrapper, sparse) resolves to the released shape', () => {
  const c = resolveGemma4Config(e2bRaw());
  assert.equal(c.modelType, 'gemma4_text');
  assert.equal(c.hiddenSize, 1536);
  assert.equal(c.numLayers, 35);
  assert.equal(c.numHeads, 8);
  assert.equal(c.numKvHeads, 1);
  assert.equal(c.headDim, 256);
  assert.equal(c.globalHeadDim, 512);
  assert.equal(c.vocabSize, 262144);
  assert.equal(c.slidingWindow, 512);
  assert.equal(c.maxPositions, 131072);
  assert.equal(c.hiddenSizePerLayerInput, 256);
  assert.equal(c.finalLogitSoftcapping, 30);
  assert.deepEqual(c.eosTokenIds, [1, 106]);
  assert.equal(c.bosTokenId, 2);
  assert.equal(c.padTokenId, 0);
  assert.equal(c.attentionKEqV, false);
  assert.equal(c.numGlobalKvHeads, null);
  assert.equal(c.enableMoeBlock, false);
  assert.equal(c.numExperts, null);
  assert.deepEqual(where(c.layerTypes, (t) => t === F), [4, 9, 14, 19, 24, 29, 34]);
  assert.deepEqual(c.ropeLocal, { theta: 10_000, linearFactor: 1, rotaryFraction: 1 });
  assert.deepEqual(c.ropeGlobal, { theta: 1_000_000, linearFactor: 1, rotaryFraction: 0.25 });

  assert.equal(c.layers.length, 35);
  for (const [i, l] of c.layers.entries()) {
    const full = (i + 1) % 5 === 0;
    assert.equal(l.sliding, !full, `layer ${i}`);
    assert.equal(l.headDim, full ? 512 : 256, `layer ${i}`);
    assert.equal(l.numKvHeads, 1, `layer ${i}`);
    assert.equal(l.kEqV, false, `layer ${i}`);
    assert.equal(l.intermediateSize, i >= 15 ? 12288 : 6144, `layer ${i}`);
    assert.equal(l.kvSource, i < 15 ? i : full ? 14 : 13, `layer ${i}`);
  }
  assert.deepEqual(where(c.layers, (l) => l.intermediateSize === 12288), Array.from({ length: 20 }, (_, k) => 15 + k));
  assert.equal(llamaCppKvSharingProblem(c), null);
});

test('E4B (text-only, sparse, default layer pattern) resolves to the released shape', () => {
  const c = resolveGemma4Config({
    architectures: ['Gemma4ForCausalLM'],
    model_type: 'gemma4_text',
    hidden_size: 2560,
    intermediate_size: 10240,
    num_hidden_layers: 42,
    num_key_value_heads: 2,
    num_kv_shared_layers: 18,
    final_logit_softcapping: 30.0,
  });
  assert.deepEqual(where(c.layerTypes, (t) => t === F), [5, 11, 17, 23, 29, 35, 41]);
  for (const [i, l] of c.layers.entries()) {
    const full = (i + 1) % 6 === 0;
    assert.equal(l.headDim, full ? 512 : 256, `layer ${i}`);
    assert.equal(l.numKvHeads, 2, `layer ${i}`);
    assert.equal(l.intermediateSize, 10240, `layer ${i}`);
    assert.equal(l.kvSource, i < 24 ? i : full ? 23 : 22, `layer ${i}`);
  }
  // The shared block's sources are exactly the two layers before it.
  assert.deepEqual([...new Set(c.layers.slice(24).map((l) => l.kvSource))].sort(), [22, 23]);
  assert.deepEqual(c.ropeGlobal, { theta: 1_000_000, linearFactor: 1, rotaryFraction: 0.25 });
  assert.equal(llamaCppKvSharingProblem(c), null);
});

test('31B (multimodal wrapper, K = V full layers, no PLE) resolves to the released shape', () => {
  const c = resolveGemma4Config({
    model_type: 'gemma4',
    eos_token_id: [1, 106],
    text_config: {
      model_type: 'gemma4_text',
      hidden_size: 5376,
      intermediate_size: 21504,
      num_hidden_layers: 60,
      num_attention_heads: 32,
      num_key_value_heads: 16,
      num_global_key_value_heads: 4,
      attention_k_eq_v: true,
      hidden_size_per_layer_input: 0,
      sliding_window: 1024,
      max_position_embeddings: 262144,
      final_logit_softcapping: 30.0,
      use_bidirectional_attention: 'vision',
    },
  });
  assert.equal(c.numGlobalKvHeads, 4);
  assert.equal(c.hiddenSizePerLayerInput, 0);
  assert.equal(c.numKvSharedLayers, 0);
  assert.equal(c.slidingWindow, 1024);
  assert.equal(c.maxPositions, 262144);
  const fulls = where(c.layerTypes, (t) => t === F);
  assert.deepEqual(fulls, Array.from({ length: 10 }, (_, k) => 6 * k + 5));
  for (const [i, l] of c.layers.entries()) {
    const full = fulls.includes(i);
    assert.deepEqual(
      l,
      { sliding: !full, headDim: full ? 512 : 256, numKvHeads: full ? 4 : 16, kEqV: full, intermediateSize: 21504, kvSource: i },
      `layer ${i}`,
    );
  }
  assert.equal(llamaCppKvSharingProblem(c), null);
});

test('26B-A4B (MoE, K = V) resolves to the released shape', () => {
  const c = resolveGemma4Config({
    model_type: 'gemma4_text',
    hidden_size: 2816,
    intermediate_size: 2112,
    num_hidden_layers: 30,
    num_attention_heads: 16,
    num_key_value_heads: 8,
    num_global_key_value_heads: 2,
    attention_k_eq_v: true,
    enable_moe_block: true,
    num_experts: 128,
    top_k_experts: 8,
    moe_intermediate_size: 704,
    hidden_size_per_layer_input: 0,
    sliding_window: 1024,
    max_position_embeddings: 262144,
    final_logit_softcapping: 30.0,
  });
  assert.equal(c.enableMoeBlock, true);
  assert.equal(c.numExperts, 128);
  assert.equal(c.topKExperts, 8);
  assert.equal(c.moeIntermediateSize, 704);
  assert.deepEqual(where(c.layerTypes, (t) => t === F), [5, 11, 17, 23, 29]);
  for (const [i, l] of c.layers.entries()) {
    const full = (i + 1) % 6 === 0;
    assert.equal(l.numKvHeads, full ? 2 : 8, `layer ${i}`);
    assert.equal(l.headDim, full ? 512 : 256, `layer ${i}`);
    assert.equal(l.kEqV, full, `layer ${i}`);
    assert.equal(l.intermediateSize, 2112, `layer ${i}`);
  }
});

test('the last layer is forced to full attention; explicit layer_types otherwise win', () => {
  const c = resolveGemma4Config({ model_type: 'gemma4_text', num_hidden_layers: 4, layer_types: [F, S, S, S] });
  assert.deepEqual(c.layerTypes, [F, S, S, F]);
  assert.equal(c.layers[3]!.headDim, 512);
  // The default rule on a length that does not end a period.
  const d = resolveGemma4Config({ model_type: 'gemma4_text', num_hidden_layers: 8 });
  assert.deepEqual(where(d.layerTypes, (t) => t === F), [5, 7]);
});

test('num_global_key_value_heads matters only with attention_k_eq_v; proportional factor and fraction are read', () => {
  const c = resolveGemma4Config({
    model_type: 'gemma4_text',
    num_hidden_layers: 6,
    num_global_key_value_heads: 1,
    rope_parameters: {
      sliding_attention: { rope_type: 'linear', factor: 4, rope_theta: 20000 },
      full_attention: { rope_type: 'proportional', partial_rotary_factor: 0.5, factor: 2, rope_theta: 5e5 },
    },
  });
  assert.equal(c.numGlobalKvHeads, null);
  assert.equal(c.layers[5]!.numKvHeads, 4);
  assert.equal(c.layers[5]!.kEqV, false);
  assert.deepEqual(c.ropeLocal, { theta: 20000, linearFactor: 4, rotaryFraction: 1 });
  assert.deepEqual(c.ropeGlobal, { theta: 5e5, linearFactor: 2, rotaryFraction: 0.5 });
  // K = V without num_global_key_value_heads keeps num_key_value_heads.
  const k = resolveGemma4Config({ model_type: 'gemma4_text', num_hidden_layers: 6, attention_k_eq_v: true });
  assert.deepEqual({ kv: k.layers[5]!.numKvHeads, kEqV: k.layers[5]!.kEqV, slidingKEqV: k.layers[0]!.kEqV }, { kv: 4, kEqV: true, slidingKEqV: false });
});

function rejects(raw: Record<string, unknown>, pattern: RegExp): void {
  assert.throws(() => resolveGemma4Config(raw), (e: unknown) => {
    assert.ok(e instanceof LutraError, `expected a LutraError, got ${String(e)}`);
    assert.match(e.message, pattern);
    assert.ok(!e.message.includes('\n'), 'one line');
    return true;
  });
}

test('bad configs are one-line errors naming the field', () => {
  rejects({ model_type: 'gemma3_text' }, /model_type is "gemma3_text"/);
  rejects({ model_type: 'gemma4' }, /no "text_config"/);
  rejects({ model_type: 'gemma4', text_config: { model_type: 'gemma3_text' } }, /text_config\.model_type/);
  rejects({ model_type: 'gemma4_text', num_hidden_layers: 3, layer_types: [S, 'chunked_attention', F] }, /layer_types\[1\] is "chunked_attention", expected "sliding_attention" or "full_attention"/);
  rejects({ model_type: 'gemma4_text', num_hidden_layers: 3, layer_types: [S, F] }, /layer_types has 2 entries but num_hidden_layers is 3/);
  rejects(
    { model_type: 'gemma4_text', num_hidden_layers: 6, rope_parameters: { sliding_attention: { rope_type: 'yarn', factor: 2 }, full_attention: {} } },
    /rope_parameters\.sliding_attention\.rope_type is "yarn"/,
  );
  rejects({ model_type: 'gemma4_text', num_hidden_layers: 6, rope_parameters: { rope_type: 'default', rope_theta: 1e4 } }, /per layer type/);
  rejects(
    { model_type: 'gemma4_text', num_hidden_layers: 6, rope_parameters: { sliding_attention: { rope_type: 'default', partial_rotary_factor: 0.5 } } },
    /partial_rotary_factor 0\.5/,
  );
  rejects({ model_type: 'gemma4_text', num_hidden_layers: 6, rope_parameters: { full_attention: { rope_type: 'default', factor: 8 } } }, /factor 8/);
  rejects({ model_type: 'gemma4_text', num_hidden_layers: 6, num_kv_shared_layers: 6 }, /num_kv_shared_layers is 6; expected an integer in \[0, 5\]/);
  rejects({ model_type: 'gemma4_text', num_hidden_layers: 6, enable_moe_block: true, num_experts: 4, moe_intermediate_size: 8 }, /top_k_experts is not set/);
  rejects({ model_type: 'gemma4_text', num_hidden_layers: 6, enable_moe_block: true, num_experts: 4, top_k_experts: 5, moe_intermediate_size: 8 }, /top_k_experts is 5/);
  rejects({ model_type: 'gemma4_text', num_hidden_layers: 6, num_key_value_heads: 3 }, /multiple of num_key_value_heads/);
  rejects({ model_type: 'gemma4_text', num_hidden_layers: 6, attention_k_eq_v: true, num_global_key_value_heads: 3 }, /num_global_key_value_heads \(3\)/);
  rejects({ model_type: 'gemma4_text', num_hidden_layers: 6, global_head_dim: 33 }, /global_head_dim must be even/);
  rejects({ model_type: 'gemma4_text', num_hidden_layers: 6, hidden_size_per_layer_input: -1 }, /hidden_size_per_layer_input is -1/);
  rejects({ model_type: 'gemma4_text', num_hidden_layers: 6, hidden_activation: 'gelu' }, /hidden_activation "gelu"/);
  rejects({ model_type: 'gemma4_text', num_hidden_layers: 6, final_logit_softcapping: 0 }, /final_logit_softcapping is 0/);
  rejects({ model_type: 'gemma4_text', num_hidden_layers: 6, vocab_size: 100, eos_token_id: [1, 106] }, /eos_token_id is 106/);
  rejects({ model_type: 'gemma4_text', num_hidden_layers: 6, rms_norm_eps: 0 }, /rms_norm_eps is 0/);
  rejects({ model_type: 'gemma4_text', num_hidden_layers: 6, attention_k_eq_v: 'yes' }, /"attention_k_eq_v" must be true or false/);
  rejects({ model_type: 'gemma4_text', num_hidden_layers: 6, use_bidirectional_attention: 'all' }, /use_bidirectional_attention is "all"/);
});

test('a KV-shared layer whose type has no earlier layer is refused', () => {
  // first = 2; layer 2 is sliding but layers 0-1 are full.
  rejects({ model_type: 'gemma4_text', num_hidden_layers: 4, layer_types: [F, F, S, F], num_kv_shared_layers: 2 }, /layer 2 is KV-shared .* no layer before 2 is sliding_attention/);
});

test('llama.cpp KV-sharing problem: detected when the layer before the shared block is sliding', () => {
  // [S S F S | S F]: first = 4, layer 3 (right before the block) is sliding.
  const c = resolveGemma4Config({ model_type: 'gemma4_text', num_hidden_layers: 6, layer_types: [S, S, F, S, S, F], num_kv_shared_layers: 2 });
  assert.equal(c.layers[4]!.kvSource, 3);
  assert.equal(c.layers[5]!.kvSource, 2);
  const why = llamaCppKvSharingProblem(c);
  assert.ok(why !== null);
  assert.match(why, /shared sliding layer read layer 2, but layer 4 reads layer 3/);
  assert.ok(!why.includes('\n'));
  // The same block after [S S S F] is what llama.cpp assumes.
  const ok = resolveGemma4Config({ model_type: 'gemma4_text', num_hidden_layers: 6, layer_types: [S, S, S, F, S, F], num_kv_shared_layers: 2 });
  assert.equal(llamaCppKvSharingProblem(ok), null);
  // No sharing, no problem.
  assert.equal(llamaCppKvSharingProblem(resolveGemma4Config({ model_type: 'gemma4_text', num_hidden_layers: 6 })), null);
});
