// Gemma 3 as llama.cpp's `gemma3` architecture: the hparams it reads, the config rebuilt from them,
// and where its graph hard-codes something the config could say otherwise.
import type { Gemma3Config } from '../config-types.js';
import { LutraError } from '../../util/errors.js';
import { f32ToBf16Bits } from '../../util/half.js';
import { ggufNumber, ggufString, kv, type GgufFile, type GgufMetadataEntry } from '../../io/gguf.js';
import { shortestF32 } from '../config-fields.js';

/**
 * GGUF metadata for a Gemma 3 text model: general.* and the gemma3.* hparams (the exporter adds
 * the tokenizer keys).
 *
 * Besides the keys convert_hf_to_gguf.py writes, two keys make llama.cpp follow the config
 * instead of its gemma3 hard-coding (read by the llama.cpp in node-llama-cpp 3.22.1, ignored by
 * older builds): `gemma3.rope.freq_base_swa` (local θ) and `gemma3.attention.sliding_window_pattern`
 * (per-layer bool, true = sliding), taken from cfg.layerTypes.
 *
 */
export function gemma3GgufMetadata(cfg: Gemma3Config, name: string, fileType: number): GgufMetadataEntry[] {
  const A = 'gemma3';
  const sliding = cfg.layerTypes.map((t) => t === 'sliding_attention');
  const m: GgufMetadataEntry[] = [
    kv.str('general.architecture', A),
    kv.str('general.name', name),
    kv.u32('general.file_type', fileType),
    kv.u32('general.quantization_version', 2),
    kv.u32(`${A}.context_length`, cfg.maxPositions),
    kv.u32(`${A}.embedding_length`, cfg.hiddenSize),
    kv.u32(`${A}.block_count`, cfg.numLayers),
    kv.u32(`${A}.feed_forward_length`, cfg.intermediateSize),
    kv.u32(`${A}.attention.head_count`, cfg.numHeads),
    kv.u32(`${A}.attention.head_count_kv`, cfg.numKvHeads),
    kv.u32(`${A}.attention.key_length`, cfg.headDim),
    kv.u32(`${A}.attention.value_length`, cfg.headDim),
    kv.f32(`${A}.attention.layer_norm_rms_epsilon`, cfg.rmsNormEps),
    kv.f32(`${A}.rope.freq_base`, cfg.ropeGlobal.theta),
  ];
  if (sliding.some((s) => s)) {
    m.push(
      kv.u32(`${A}.attention.sliding_window`, cfg.slidingWindow),
      kv.arr.bool(`${A}.attention.sliding_window_pattern`, sliding),
      kv.f32(`${A}.rope.freq_base_swa`, cfg.ropeLocal.theta),
    );
  }
  if (cfg.ropeGlobal.linearFactor !== 1) {
    m.push(kv.str(`${A}.rope.scaling.type`, 'linear'), kv.f32(`${A}.rope.scaling.factor`, cfg.ropeGlobal.linearFactor));
  }
  if (cfg.finalLogitSoftcapping !== null) m.push(kv.f32(`${A}.final_logit_softcapping`, cfg.finalLogitSoftcapping));
  return m;
}

/**
 * Where llama.cpp's gemma3 graph will not follow `cfg` (it hard-codes these), so an oracle
 * comparison against lutra must avoid them. Empty when llama.cpp and HF agree.
 */
export function gemma3LlamaCppDifferences(cfg: Gemma3Config): string[] {
  const out: string[] = [];
  const sq = Math.fround(Math.sqrt(cfg.hiddenSize));
  f32Probe[0] = sq;
  if (f32ToBf16Bits(sq) << 16 !== (u32Probe[0]! | 0)) {
    out.push(`embedding scale: llama.cpp multiplies by sqrt(${cfg.hiddenSize}) exactly, HF bf16 models by it rounded to bf16`);
  }
  const is27b = cfg.numLayers === 62; // llama.cpp picks the model type from block_count
  const llamaScale = is27b ? 1 / Math.sqrt(Math.floor(cfg.hiddenSize / cfg.numHeads)) : 1 / Math.sqrt(cfg.headDim);
  const hfScale = 1 / Math.sqrt(cfg.queryPreAttnScalar);
  if (Math.fround(llamaScale) !== Math.fround(hfScale)) {
    out.push(
      `attention scale: llama.cpp uses 1/sqrt(${is27b ? 'hidden/heads' : 'head_dim'}) = ${llamaScale}, the config query_pre_attn_scalar gives ${hfScale}`,
    );
  }
  if (cfg.ropeLocal.linearFactor !== 1) out.push('local RoPE scaling: llama.cpp never scales sliding-layer RoPE');
  if (cfg.hiddenActivation !== 'gelu_pytorch_tanh') out.push(`activation: llama.cpp uses tanh-GELU, the config says ${cfg.hiddenActivation}`);
  return out;
}
const f32Probe = new Float32Array(1);
const u32Probe = new Uint32Array(f32Probe.buffer);


/** An HF-style config.json (gemma3_text) from the gemma3.* metadata. */
export function gemma3ConfigFromGguf(f: GgufFile, vocabSize: number, hasOutput: boolean): Record<string, unknown> {
  const arch = ggufString(f, 'general.architecture', true);
  if (arch !== 'gemma3') throw new LutraError(`${f.path}: general.architecture is "${arch}"; lutra reads gemma3 GGUF files`);
  const A = 'gemma3';
  const n = (key: string) => shortestF32(ggufNumber(f, `${A}.${key}`, true));
  const opt = (key: string) => {
    const v = ggufNumber(f, `${A}.${key}`);
    return v === undefined ? undefined : shortestF32(v);
  };
  const hidden = n('embedding_length');
  const heads = n('attention.head_count');
  const layers = n('block_count');
  const headDim = opt('attention.key_length') ?? hidden / heads;
  const cfg: Record<string, unknown> = {
    architectures: ['Gemma3ForCausalLM'],
    model_type: 'gemma3_text',
    vocab_size: vocabSize,
    hidden_size: hidden,
    intermediate_size: n('feed_forward_length'),
    num_hidden_layers: layers,
    num_attention_heads: heads,
    num_key_value_heads: opt('attention.head_count_kv') ?? heads,
    head_dim: headDim,
    // GGUF has no query_pre_attn_scalar; this is what llama.cpp's gemma3 graph uses (27B: hidden/heads).
    query_pre_attn_scalar: layers === 62 ? hidden / heads : headDim,
    max_position_embeddings: n('context_length'),
    rms_norm_eps: opt('attention.layer_norm_rms_epsilon') ?? 1e-6,
    rope_theta: opt('rope.freq_base') ?? 1_000_000,
    rope_local_base_freq: opt('rope.freq_base_swa') ?? 10_000,
    hidden_activation: 'gelu_pytorch_tanh',
    tie_word_embeddings: !hasOutput,
  };
  const window = opt('attention.sliding_window');
  if (window !== undefined) cfg.sliding_window = window;
  // Sliding pattern: a per-layer bool array (true = sliding) or llama.cpp's older period number.
  const pattern = f.metadata.get(`${A}.attention.sliding_window_pattern`);
  if (Array.isArray(pattern)) cfg.layer_types = pattern.map((s) => (s ? 'sliding_attention' : 'full_attention'));
  else if (typeof pattern === 'number') cfg.sliding_window_pattern = pattern;
  if (ggufString(f, `${A}.rope.scaling.type`) === 'linear') cfg.rope_scaling = { rope_type: 'linear', factor: n('rope.scaling.factor') };
  const softcap = opt('final_logit_softcapping');
  if (softcap !== undefined) cfg.final_logit_softcapping = softcap;
  for (const [key, field] of [['bos', 'bos_token_id'], ['eos', 'eos_token_id'], ['padding', 'pad_token_id']] as const) {
    const id = ggufNumber(f, `tokenizer.ggml.${key}_token_id`);
    if (id !== undefined) cfg[field] = id;
  }
  return cfg;
}

