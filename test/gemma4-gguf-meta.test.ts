import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveGemma4Config } from '../src/arch/gemma4/config.js';
import { GEMMA4_ROPE_FREQS_TENSOR, gemma4ConfigFromGguf, gemma4GgufMetadata, gemma4RopeFreqs } from '../src/arch/gemma4/gguf.js';
import { gemma4GgufTensorName, gemma4HfTensorName, gemma4Tensors } from '../src/arch/gemma4/tensors.js';
import type { Gemma4Config } from '../src/arch/config-types.js';
import { GgufType, kv, readGguf, writeGguf } from '../src/io/gguf.js';
import type { GgufMetadataEntry, GgufTensorSpec } from '../src/io/gguf.js';
import { LutraError } from '../src/util/errors.js';
import { LlamaCppOracle } from '../src/verify/llama-cpp.js';

/** Names of every tensor the manifest lists for a checkpoint of cfg (tied head unless untied). */
function gemma4HfTensorNames(cfg: Gemma4Config): string[] {
  return gemma4Tensors(cfg, { has: (n) => n === 'lm_head.weight' && !cfg.tieWordEmbeddings }).map((t) => t.name);
}

/** The manifest's shape for one tensor; a layer past the config is an error. */
function gemma4ExpectedShape(name: string, cfg: Gemma4Config): number[] {
  const m = /^model\.layers\.(\d+)\./.exec(name);
  if (m && Number(m[1]) >= cfg.numLayers) throw new LutraError(`tensor "${name}": layer ${m[1]} but the config has ${cfg.numLayers} layers`);
  const t = gemma4Tensors(cfg, { has: () => true }).find((x) => x.name === name);
  if (!t) throw new LutraError(`tensor "${name}": not in the Gemma 4 manifest`);
  return t.shape;
}

const S = 'sliding_attention';
const F = 'full_attention';
const VOCAB = 512;

/** E2B-like: [S S S S F] x 2, PLE, 5 KV-shared layers with double-wide MLP. */
function denseRaw(): Record<string, unknown> {
  return {
    model_type: 'gemma4_text',
    vocab_size: VOCAB,
    vocab_size_per_layer_input: VOCAB,
    hidden_size: 64,
    intermediate_size: 96,
    num_hidden_layers: 10,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 16,
    global_head_dim: 32,
    layer_types: [S, S, S, S, F, S, S, S, S, F],
    sliding_window: 8,
    hidden_size_per_layer_input: 16,
    num_kv_shared_layers: 5,
    use_double_wide_mlp: true,
    final_logit_softcapping: 30,
    max_position_embeddings: 4096,
  };
}

/** 26B-A4B-like: [S S F S S F], K = V full layers with one KV head, 8 experts top-2, no PLE. */
function moeRaw(): Record<string, unknown> {
  return {
    model_type: 'gemma4_text',
    vocab_size: VOCAB,
    vocab_size_per_layer_input: VOCAB,
    hidden_size: 96,
    intermediate_size: 64,
    num_hidden_layers: 6,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    num_global_key_value_heads: 1,
    attention_k_eq_v: true,
    head_dim: 16,
    global_head_dim: 32,
    layer_types: [S, S, F, S, S, F],
    sliding_window: 16,
    hidden_size_per_layer_input: 0,
    enable_moe_block: true,
    num_experts: 8,
    top_k_experts: 2,
    moe_intermediate_size: 32,
    final_logit_softcapping: 30,
    rms_norm_eps: 1e-5,
  };
}

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'lutra-g4gguf-'));
}

test('tensor names: fixed mappings and a round trip over every tensor of a dense+PLE and an MoE config', () => {
  const expected: [string, string][] = [
    ['model.embed_tokens.weight', 'token_embd.weight'],
    ['lm_head.weight', 'output.weight'],
    ['model.norm.weight', 'output_norm.weight'],
    ['model.embed_tokens_per_layer.weight', 'per_layer_token_embd.weight'],
    ['model.per_layer_model_projection.weight', 'per_layer_model_proj.weight'],
    ['model.per_layer_projection_norm.weight', 'per_layer_proj_norm.weight'],
    ['model.layers.3.input_layernorm.weight', 'blk.3.attn_norm.weight'],
    ['model.layers.3.self_attn.q_proj.weight', 'blk.3.attn_q.weight'],
    ['model.layers.3.self_attn.k_proj.weight', 'blk.3.attn_k.weight'],
    ['model.layers.3.self_attn.v_proj.weight', 'blk.3.attn_v.weight'],
    ['model.layers.3.self_attn.o_proj.weight', 'blk.3.attn_output.weight'],
    ['model.layers.3.self_attn.q_norm.weight', 'blk.3.attn_q_norm.weight'],
    ['model.layers.3.self_attn.k_norm.weight', 'blk.3.attn_k_norm.weight'],
    ['model.layers.3.post_attention_layernorm.weight', 'blk.3.post_attention_norm.weight'],
    ['model.layers.3.pre_feedforward_layernorm.weight', 'blk.3.ffn_norm.weight'],
    ['model.layers.3.mlp.gate_proj.weight', 'blk.3.ffn_gate.weight'],
    ['model.layers.3.mlp.up_proj.weight', 'blk.3.ffn_up.weight'],
    ['model.layers.3.mlp.down_proj.weight', 'blk.3.ffn_down.weight'],
    ['model.layers.3.post_feedforward_layernorm.weight', 'blk.3.post_ffw_norm.weight'],
    ['model.layers.3.layer_scalar', 'blk.3.layer_output_scale.weight'],
    ['model.layers.12.per_layer_input_gate.weight', 'blk.12.inp_gate.weight'],
    ['model.layers.12.per_layer_projection.weight', 'blk.12.proj.weight'],
    ['model.layers.12.post_per_layer_input_norm.weight', 'blk.12.post_norm.weight'],
    ['model.layers.0.router.proj.weight', 'blk.0.ffn_gate_inp.weight'],
    ['model.layers.0.router.scale', 'blk.0.ffn_gate_inp.scale'],
    ['model.layers.0.router.per_expert_scale', 'blk.0.ffn_down_exps.scale'],
    ['model.layers.0.pre_feedforward_layernorm_2.weight', 'blk.0.pre_ffw_norm_2.weight'],
    ['model.layers.0.post_feedforward_layernorm_1.weight', 'blk.0.post_ffw_norm_1.weight'],
    ['model.layers.0.post_feedforward_layernorm_2.weight', 'blk.0.post_ffw_norm_2.weight'],
    ['model.layers.0.experts.gate_up_proj', 'blk.0.ffn_gate_up_exps.weight'],
    ['model.layers.0.experts.down_proj', 'blk.0.ffn_down_exps.weight'],
  ];
  for (const [hf, g] of expected) {
    assert.equal(gemma4GgufTensorName(hf), g);
    assert.equal(gemma4HfTensorName(g), hf);
  }

  for (const raw of [denseRaw(), moeRaw()]) {
    const cfg = resolveGemma4Config(raw);
    // Plus the tensors a checkpoint may carry beyond the required ones: lm_head, K/V of shared layers.
    const names = [...gemma4HfTensorNames(cfg), 'lm_head.weight'];
    for (let i = 0; i < cfg.numLayers; i++) names.push(`model.layers.${i}.self_attn.k_proj.weight`, `model.layers.${i}.self_attn.v_proj.weight`);
    const unique = [...new Set(names)];
    const ggufs = unique.map(gemma4GgufTensorName);
    assert.equal(new Set(ggufs).size, unique.length, 'GGUF names are distinct');
    for (const [k, g] of ggufs.entries()) assert.equal(gemma4HfTensorName(g), unique[k]);
  }

  for (const bad of ['model.layers.3.self_attn.v_norm.weight', 'model.layers.x.mlp.up_proj.weight', 'model.language_model.norm.weight', 'model.layers.01.mlp.up_proj.weight']) {
    assert.throws(() => gemma4GgufTensorName(bad), (e: unknown) => e instanceof LutraError && e.message.includes(`"${bad}"`));
  }
  for (const other of [GEMMA4_ROPE_FREQS_TENSOR, 'blk.1.ffn_gate_exps.weight', 'blk.1.ffn_up_exps.weight', 'blk.01.attn_q.weight', 'blk.1.attn_qkv.weight', 'token_embd']) {
    assert.equal(gemma4HfTensorName(other), null, other);
  }
});

test('required tensor list and shapes follow the per-layer config', () => {
  const dense = resolveGemma4Config(denseRaw());
  const names = new Set(gemma4HfTensorNames(dense));
  assert.ok(names.has('model.embed_tokens_per_layer.weight'));
  assert.ok(!names.has('lm_head.weight'));
  assert.ok(names.has('model.layers.4.self_attn.k_proj.weight'));
  assert.ok(!names.has('model.layers.5.self_attn.k_proj.weight'), 'shared layers have no K/V of their own');
  assert.ok(!names.has('model.layers.5.self_attn.k_norm.weight'));
  assert.ok(names.has('model.layers.5.self_attn.q_norm.weight'));
  assert.ok(!names.has('model.layers.0.router.proj.weight'));
  assert.deepEqual(gemma4ExpectedShape('model.layers.4.self_attn.q_proj.weight', dense), [4 * 32, 64]);
  assert.deepEqual(gemma4ExpectedShape('model.layers.3.self_attn.k_proj.weight', dense), [2 * 16, 64]);
  assert.deepEqual(gemma4ExpectedShape('model.layers.9.mlp.down_proj.weight', dense), [64, 192]);
  assert.deepEqual(gemma4ExpectedShape('model.layers.4.mlp.down_proj.weight', dense), [64, 96]);
  assert.deepEqual(gemma4ExpectedShape('model.embed_tokens_per_layer.weight', dense), [VOCAB, 10 * 16]);
  assert.deepEqual(gemma4ExpectedShape('model.per_layer_model_projection.weight', dense), [160, 64]);
  assert.deepEqual(gemma4ExpectedShape('model.layers.2.layer_scalar', dense), [1]);

  const moe = resolveGemma4Config(moeRaw());
  const m = new Set(gemma4HfTensorNames(moe));
  assert.ok(!m.has('model.layers.2.self_attn.v_proj.weight'), 'K = V full layers have no v_proj');
  assert.ok(m.has('model.layers.1.self_attn.v_proj.weight'));
  assert.ok(m.has('model.layers.5.experts.gate_up_proj'));
  assert.ok(!m.has('model.embed_tokens_per_layer.weight'));
  assert.deepEqual(gemma4ExpectedShape('model.layers.2.self_attn.k_proj.weight', moe), [1 * 32, 96]);
  assert.deepEqual(gemma4ExpectedShape('model.layers.0.experts.gate_up_proj', moe), [8, 64, 96]);
  assert.deepEqual(gemma4ExpectedShape('model.layers.0.experts.down_proj', moe), [8, 96, 32]);
  assert.deepEqual(gemma4ExpectedShape('model.layers.0.router.proj.weight', moe), [8, 96]);
  assert.throws(() => gemma4ExpectedShape('model.layers.6.mlp.up_proj.weight', moe), /layer 6 but the config has 6 layers/);
});

test('rope_freqs: 1 for the rotated pairs, 1e30 after', () => {
  const e2b = resolveGemma4Config({ model_type: 'gemma4_text', num_hidden_layers: 35 });
  const r = gemma4RopeFreqs(e2b);
  assert.equal(r.length, 256);
  for (let j = 0; j < 256; j++) assert.equal(r[j], j < 64 ? 1 : Math.fround(1e30), `j=${j}`);
  // R = floor(0.3 · 32 / 2) = 4.
  const odd = resolveGemma4Config({
    model_type: 'gemma4_text', num_hidden_layers: 6, global_head_dim: 32,
    rope_parameters: { sliding_attention: { rope_type: 'default', rope_theta: 1e4 }, full_attention: { rope_type: 'proportional', partial_rotary_factor: 0.3, rope_theta: 1e6 } },
  });
  assert.deepEqual(Array.from(gemma4RopeFreqs(odd)), [1, 1, 1, 1, ...new Array(12).fill(Math.fround(1e30))]);
  const full = resolveGemma4Config({
    model_type: 'gemma4_text', num_hidden_layers: 6, global_head_dim: 8,
    rope_parameters: { sliding_attention: { rope_type: 'default' }, full_attention: { rope_type: 'default', rope_theta: 1e6 } },
  });
  assert.deepEqual(Array.from(gemma4RopeFreqs(full)), [1, 1, 1, 1]);
});

async function withGguf<T>(meta: GgufMetadataEntry[], tensors: GgufTensorSpec[], fn: (path: string) => T | Promise<T>): Promise<T> {
  const dir = tmp();
  try {
    const path = join(dir, 'm.gguf');
    await writeGguf(path, meta, tensors);
    return await fn(path);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function f32Tensor(name: string, data: Float32Array, shape = [data.length]): GgufTensorSpec {
  return { name, shape, type: GgufType.F32, nbytes: data.byteLength, data: () => new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

/** Every tensor of `cfg` as zeros of its expected shape, plus rope_freqs. */
function allTensors(cfg: Gemma4Config): GgufTensorSpec[] {
  const specs = gemma4HfTensorNames(cfg).map((hf) => {
    const shape = gemma4ExpectedShape(hf, cfg);
    return f32Tensor(gemma4GgufTensorName(hf), new Float32Array(shape.reduce((a, b) => a * b, 1)), shape);
  });
  specs.push(f32Tensor(GEMMA4_ROPE_FREQS_TENSOR, gemma4RopeFreqs(cfg)));
  return specs;
}

test('metadata written with the GGUF writer reads back with the expected keys, types and values', async () => {
  const cfg = resolveGemma4Config(denseRaw());
  const meta = gemma4GgufMetadata(cfg, 'tiny e2b', 0);
  await withGguf(meta, [], (path) => {
    const f = readGguf(path);
    const m = f.metadata;
    const t = (key: string) => f.metadataTypes.get(key);
    const u32 = { type: 'uint32' };
    const f32 = { type: 'float32' };
    const expected: [string, unknown, unknown][] = [
      ['general.architecture', 'gemma4', { type: 'string' }],
      ['general.name', 'tiny e2b', { type: 'string' }],
      ['general.file_type', 0, u32],
      ['gemma4.context_length', 4096, u32],
      ['gemma4.embedding_length', 64, u32],
      ['gemma4.block_count', 10, u32],
      ['gemma4.feed_forward_length', new Int32Array([96, 96, 96, 96, 96, 192, 192, 192, 192, 192]), { type: 'array', itemType: 'int32' }],
      ['gemma4.attention.head_count', 4, u32],
      ['gemma4.attention.head_count_kv', new Int32Array(10).fill(2), { type: 'array', itemType: 'int32' }],
      ['gemma4.attention.key_length', 32, u32],
      ['gemma4.attention.value_length', 32, u32],
      ['gemma4.attention.key_length_swa', 16, u32],
      ['gemma4.attention.value_length_swa', 16, u32],
      ['gemma4.rope.dimension_count', 32, u32],
      ['gemma4.rope.dimension_count_swa', 16, u32],
      ['gemma4.rope.freq_base', 1e6, f32],
      ['gemma4.rope.freq_base_swa', 1e4, f32],
      ['gemma4.attention.sliding_window', 8, u32],
      ['gemma4.attention.sliding_window_pattern', [true, true, true, true, false, true, true, true, true, false], { type: 'array', itemType: 'bool' }],
      ['gemma4.attention.layer_norm_rms_epsilon', Math.fround(1e-6), f32],
      ['gemma4.attention.shared_kv_layers', 5, u32],
      ['gemma4.embedding_length_per_layer_input', 16, u32],
      ['gemma4.final_logit_softcapping', 30, f32],
    ];
    assert.deepEqual([...m.keys()].sort(), expected.map((e) => e[0]).sort());
    for (const [key, value, type] of expected) {
      assert.deepEqual(m.get(key), value, key);
      assert.deepEqual(t(key), type, key);
    }
  });

  const moe = resolveGemma4Config(moeRaw());
  await withGguf(gemma4GgufMetadata(moe, 'tiny moe', 1), [], (path) => {
    const f = readGguf(path);
    const m = f.metadata;
    assert.equal(m.get('general.file_type'), 1);
    assert.deepEqual(m.get('gemma4.attention.head_count_kv'), new Int32Array([2, 2, 1, 2, 2, 1]));
    assert.deepEqual(m.get('gemma4.feed_forward_length'), new Int32Array(6).fill(64));
    assert.equal(m.get('gemma4.embedding_length_per_layer_input'), 0);
    assert.equal(m.get('gemma4.attention.shared_kv_layers'), 0);
    assert.equal(m.get('gemma4.expert_count'), 8);
    assert.equal(m.get('gemma4.expert_used_count'), 2);
    assert.equal(m.get('gemma4.expert_feed_forward_length'), 32);
    for (const k of ['gemma4.expert_count', 'gemma4.expert_used_count', 'gemma4.expert_feed_forward_length']) assert.deepEqual(f.metadataTypes.get(k), { type: 'uint32' });
  });
  // No softcap, no expert keys when the config has none.
  const plain = gemma4GgufMetadata(resolveGemma4Config({ model_type: 'gemma4_text', num_hidden_layers: 6 }), 'x', 0).map((e) => e.key);
  assert.ok(!plain.includes('gemma4.final_logit_softcapping'));
  assert.ok(!plain.some((k) => k.startsWith('gemma4.expert')));
});

test('what llama.cpp cannot express is refused', () => {
  const scaled = resolveGemma4Config({
    model_type: 'gemma4_text', num_hidden_layers: 6,
    rope_parameters: { sliding_attention: { rope_type: 'default' }, full_attention: { rope_type: 'proportional', partial_rotary_factor: 0.25, factor: 8 } },
  });
  assert.throws(() => gemma4GgufMetadata(scaled, 'x', 0), (e: unknown) => e instanceof LutraError && /RoPE by a factor/.test(e.message));
  assert.throws(() => gemma4RopeFreqs(scaled), LutraError);
  const partialSliding = resolveGemma4Config({
    model_type: 'gemma4_text', num_hidden_layers: 6,
    rope_parameters: { sliding_attention: { rope_type: 'proportional', partial_rotary_factor: 0.5 }, full_attention: { rope_type: 'proportional', partial_rotary_factor: 0.25 } },
  });
  assert.throws(() => gemma4GgufMetadata(partialSliding, 'x', 0), /sliding-attention RoPE/);
});

test('config round trip through a GGUF file: dense+PLE and MoE resolve as the original', async () => {
  for (const raw of [denseRaw(), moeRaw(), { ...e2bLike(), vocab_size: VOCAB, vocab_size_per_layer_input: VOCAB }]) {
    const cfg = resolveGemma4Config(raw);
    const meta = [...gemma4GgufMetadata(cfg, 'rt', 0), kv.u32('tokenizer.ggml.bos_token_id', 2), kv.u32('tokenizer.ggml.eos_token_id', 1), kv.u32('tokenizer.ggml.padding_token_id', 0)];
    await withGguf(meta, allTensors(cfg), (path) => {
      const f = readGguf(path);
      const back = gemma4ConfigFromGguf(f, VOCAB);
      assert.equal(back.model_type, 'gemma4_text');
      assert.deepEqual(resolveGemma4Config(back, 'rebuilt'), cfg);
    });
  }
});

/** A full-size E2B pattern on tiny widths: 35 layers, 20 shared, fraction 0.25 of a 64-dim global head. */
function e2bLike(): Record<string, unknown> {
  return {
    model_type: 'gemma4_text',
    hidden_size: 32,
    intermediate_size: 48,
    num_hidden_layers: 35,
    num_attention_heads: 2,
    num_key_value_heads: 1,
    head_dim: 8,
    global_head_dim: 64,
    hidden_size_per_layer_input: 4,
    layer_types: Array.from({ length: 35 }, (_, i) => ((i + 1) % 5 === 0 ? F : S)),
    num_kv_shared_layers: 20,
    use_double_wide_mlp: true,
    final_logit_softcapping: 30.0,
  };
}

test('K = V is read from the missing attn_v tensors when the head counts cannot tell', async () => {
  // Global KV heads equal the sliding ones: only the absent V projections show K = V.
  const cfg = resolveGemma4Config({ ...moeRaw(), num_global_key_value_heads: 2 });
  assert.equal(cfg.layers[2]!.kEqV, true);
  await withGguf(gemma4GgufMetadata(cfg, 'kv', 0), allTensors(cfg), (path) => {
    const back = resolveGemma4Config(gemma4ConfigFromGguf(readGguf(path), VOCAB));
    assert.deepEqual(back.layers, cfg.layers);
    assert.equal(back.attentionKEqV, true);
  });
  // An untied head (output.weight present) comes back as tie_word_embeddings false.
  const untied = resolveGemma4Config({ ...denseRaw(), tie_word_embeddings: false });
  const specs = allTensors(untied);
  assert.ok(specs.some((s) => s.name === 'output.weight'));
  await withGguf(gemma4GgufMetadata(untied, 'u', 0), specs, (path) => {
    assert.equal(gemma4ConfigFromGguf(readGguf(path), VOCAB).tie_word_embeddings, false);
  });
});

test('reading a damaged or foreign gemma4 GGUF names the key or tensor', async () => {
  const cfg = resolveGemma4Config(denseRaw());
  const base = gemma4GgufMetadata(cfg, 'bad', 0);
  const rope = [f32Tensor(GEMMA4_ROPE_FREQS_TENSOR, gemma4RopeFreqs(cfg))];
  const without = (key: string) => base.filter((e) => e.key !== key);
  const replace = (entry: GgufMetadataEntry) => [...without(entry.key), entry];
  const cases: [GgufMetadataEntry[], GgufTensorSpec[], RegExp][] = [
    [without('gemma4.attention.key_length_swa'), rope, /"gemma4\.attention\.key_length_swa" is missing/],
    [without('gemma4.attention.sliding_window_pattern'), rope, /"gemma4\.attention\.sliding_window_pattern" is missing/],
    [without('gemma4.embedding_length_per_layer_input'), rope, /"gemma4\.embedding_length_per_layer_input" is missing/],
    [replace(kv.arr.i32('gemma4.attention.head_count_kv', [2, 2, 2])), rope, /"gemma4\.attention\.head_count_kv" has 3 entries but block_count is 10/],
    [replace(kv.arr.i32('gemma4.feed_forward_length', [96, 96, 96, 96, 96, 100, 100, 100, 100, 100])), rope, /"gemma4\.feed_forward_length" gives KV-shared layers 100/],
    [replace(kv.arr.i32('gemma4.feed_forward_length', [96, 90, 96, 96, 96, 192, 192, 192, 192, 192])), rope, /"gemma4\.feed_forward_length" gives layer 1 90/],
    [replace(kv.arr.bool('gemma4.attention.sliding_window_pattern', new Array(10).fill(true))), rope, /marks the last layer sliding/],
    [replace(kv.u32('gemma4.rope.dimension_count', 8)), rope, /"gemma4\.rope\.dimension_count" is 8/],
    [replace(kv.str('general.architecture', 'gemma3')), rope, /general\.architecture is "gemma3"/],
    [base, [], /tensor "rope_freqs\.weight" is missing/],
    [base, [f32Tensor(GEMMA4_ROPE_FREQS_TENSOR, new Float32Array([1, 1, 0.5, ...new Array(13).fill(1e30)]))], /"rope_freqs\.weight" has 0\.5 at 2/],
  ];
  for (const [meta, tensors, pattern] of cases) {
    await withGguf(meta, tensors, (path) => {
      assert.throws(() => gemma4ConfigFromGguf(readGguf(path), VOCAB), (e: unknown) => {
        assert.ok(e instanceof LutraError, String(e));
        assert.match(e.message, pattern);
        return true;
      });
    });
  }
  // A scalar feed_forward_length / head_count_kv (llama.cpp's other form) is read for every layer.
  const moe = resolveGemma4Config({ ...moeRaw(), attention_k_eq_v: false, num_global_key_value_heads: null });
  const scalarMeta = gemma4GgufMetadata(moe, 's', 0).filter((e) => e.key !== 'gemma4.feed_forward_length' && e.key !== 'gemma4.attention.head_count_kv');
  scalarMeta.push(kv.u32('gemma4.feed_forward_length', 64), kv.u32('gemma4.attention.head_count_kv', 2));
  await withGguf(scalarMeta, [f32Tensor(GEMMA4_ROPE_FREQS_TENSOR, gemma4RopeFreqs(moe))], (path) => {
    assert.deepEqual(resolveGemma4Config(gemma4ConfigFromGguf(readGguf(path), VOCAB)), moe);
  });
});

/** A minimal SentencePiece-style vocabulary of VOCAB pieces (control, byte and plain pieces). */
function tinyTokenizer(): GgufMetadataEntry[] {
  const tokens: string[] = [];
  const types: number[] = [];
  for (let i = 0; i < VOCAB; i++) {
    if (i < 4) {
      tokens.push(['<pad>', '<eos>', '<bos>', '<unk>'][i]!);
      types.push(i === 3 ? 2 : 3);
    } else if (i < 260) {
      tokens.push(`<0x${(i - 4).toString(16).toUpperCase().padStart(2, '0')}>`);
      types.push(6);
    } else {
      tokens.push(`\u2581w${i}`);
      types.push(1);
    }
  }
  return [
    kv.str('tokenizer.ggml.model', 'llama'),
    kv.arr.str('tokenizer.ggml.tokens', tokens),
    kv.arr.f32('tokenizer.ggml.scores', new Float32Array(VOCAB)),
    kv.arr.i32('tokenizer.ggml.token_type', types),
    kv.u32('tokenizer.ggml.bos_token_id', 2),
    kv.u32('tokenizer.ggml.eos_token_id', 1),
    kv.u32('tokenizer.ggml.unknown_token_id', 3),
    kv.u32('tokenizer.ggml.padding_token_id', 0),
  ];
}

test('llama.cpp loads the written metadata, names and shapes (dense+PLE with KV sharing, MoE with K = V) and runs them', async () => {
  let state = 12345;
  const rnd = () => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return state / 2147483648 - 0.5;
  };
  for (const raw of [denseRaw(), moeRaw()]) {
    const cfg = resolveGemma4Config(raw);
    const specs = gemma4HfTensorNames(cfg).map((hf) => {
      const shape = gemma4ExpectedShape(hf, cfg);
      const d = new Float32Array(shape.reduce((a, b) => a * b, 1));
      const multiplier = /norm|scale|layer_scalar/.test(hf);
      for (let i = 0; i < d.length; i++) d[i] = multiplier ? 1 + 0.2 * rnd() : 0.2 * rnd();
      return f32Tensor(gemma4GgufTensorName(hf), d, shape);
    });
    specs.push(f32Tensor(GEMMA4_ROPE_FREQS_TENSOR, gemma4RopeFreqs(cfg)));
    await withGguf([...gemma4GgufMetadata(cfg, 'load', 0), ...tinyTokenizer()], specs, async (path) => {
      const oracle = await LlamaCppOracle.load(path, { threads: 1, contextSize: 64 });
      try {
        assert.equal(oracle.vocabSize, VOCAB);
        // Longer than both sliding windows, so the shared and windowed caches are exercised.
        const ids = [2, ...Array.from({ length: 40 }, (_, i) => 4 + ((i * 97) % (VOCAB - 4)))];
        const lps = await oracle.teacherForced(ids);
        assert.equal(lps.length, ids.length);
        for (const [t, lp] of lps.entries()) {
          let total = 0;
          for (const x of lp) total += Math.exp(x);
          assert.ok(Math.abs(total - 1) < 1e-3, `position ${t}: probabilities sum to ${total}`);
        }
      } finally {
        await oracle.dispose();
      }
    });
  }
});
