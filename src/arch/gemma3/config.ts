// Gemma 3 text config resolution: mirrors Gemma3TextConfig's class defaults and its RoPE
// normalisation, because Hub configs of 4B+ are sparse.
import { LutraError } from '../../util/errors.js';

export type { Gemma3Config } from '../config-types.js';
import type { Gemma3Config, LayerType, RopeParams } from '../config-types.js';
import { checkInt, checkPositive, num, SIZE_LIMITS, tokenIds, type Json } from '../config-fields.js';

const DEFAULTS = {
  vocab_size: 262208,
  hidden_size: 2304,
  intermediate_size: 9216,
  num_hidden_layers: 26,
  num_attention_heads: 8,
  num_key_value_heads: 4,
  head_dim: 256,
  hidden_activation: 'gelu_pytorch_tanh',
  max_position_embeddings: 131072,
  rms_norm_eps: 1e-6,
  pad_token_id: 0,
  eos_token_id: 1,
  bos_token_id: 2,
  tie_word_embeddings: true,
  rope_theta: 1_000_000,
  rope_local_base_freq: 10_000,
  query_pre_attn_scalar: 256,
  sliding_window: 4096,
  sliding_window_pattern: 6,
};

const LIMITS = SIZE_LIMITS;

/** Reads the rope type/factor from a legacy `rope_scaling` or a `rope_parameters` entry. */
function linearFactor(scaling: unknown, file: string, where: string): number {
  if (scaling === undefined || scaling === null) return 1;
  const s = scaling as Json;
  const type = (s.rope_type ?? s.type ?? 'default') as string;
  if (type === 'default') return 1;
  if (type === 'linear') {
    const f = s.factor;
    if (typeof f !== 'number' || f <= 0) throw new LutraError(`${file}: ${where} has rope type "linear" without a positive "factor"`);
    return f;
  }
  throw new LutraError(`${file}: ${where} uses rope type "${type}"; Gemma 3 supports "default" and "linear" only`);
}

/**
 * Resolve a parsed config.json into a complete Gemma3Config.
 * `file` names the config in error messages.
 */
export function resolveGemma3Config(raw: Json, file = 'config.json'): Gemma3Config {
  const top = raw;
  let text: Json = raw;
  const topType = top.model_type;
  if (topType === 'gemma3') {
    if (typeof top.text_config !== 'object' || top.text_config === null) {
      throw new LutraError(`${file}: model_type "gemma3" (multimodal) but no "text_config" object`);
    }
    text = top.text_config as Json;
  } else if (topType !== 'gemma3_text') {
    throw new LutraError(
      `${file}: model_type is ${JSON.stringify(topType)}; lutra runs Gemma 3 text models ("gemma3_text", or "gemma3" with a text_config)`,
    );
  }
  if (text.model_type !== undefined && text.model_type !== 'gemma3_text') {
    throw new LutraError(`${file}: text_config.model_type is ${JSON.stringify(text.model_type)}, expected "gemma3_text"`);
  }

  const D = DEFAULTS;
  const numLayers = num(text, 'num_hidden_layers', D.num_hidden_layers, file);
  checkInt(file, 'num_hidden_layers', numLayers, 1, LIMITS.num_hidden_layers);
  const patternKey = text.sliding_window_pattern === undefined && text._sliding_window_pattern !== undefined ? '_sliding_window_pattern' : 'sliding_window_pattern';
  const pattern = num(text, patternKey, D.sliding_window_pattern, file);
  checkInt(file, patternKey, pattern, 1, Infinity);

  let layerTypes: LayerType[];
  if (Array.isArray(text.layer_types)) {
    layerTypes = text.layer_types.map((t, i) => {
      if (t !== 'sliding_attention' && t !== 'full_attention') {
        throw new LutraError(`${file}: layer_types[${i}] is ${JSON.stringify(t)}, expected "sliding_attention" or "full_attention"`);
      }
      return t;
    });
    if (layerTypes.length !== numLayers) {
      throw new LutraError(`${file}: layer_types has ${layerTypes.length} entries but num_hidden_layers is ${numLayers}`);
    }
  } else {
    layerTypes = Array.from({ length: numLayers }, (_, i) => ((i + 1) % pattern !== 0 ? 'sliding_attention' : 'full_attention'));
  }

  // RoPE: new-style rope_parameters wins; otherwise legacy keys, scaling on global layers only.
  let ropeGlobal: RopeParams;
  let ropeLocal: RopeParams;
  const rp = text.rope_parameters as Json | undefined;
  if (rp && typeof rp === 'object' && ('full_attention' in rp || 'sliding_attention' in rp)) {
    const full = (rp.full_attention ?? {}) as Json;
    const slide = (rp.sliding_attention ?? {}) as Json;
    ropeGlobal = { theta: num(full, 'rope_theta', D.rope_theta, file), linearFactor: linearFactor(full, file, 'rope_parameters.full_attention'), rotaryFraction: 1 };
    ropeLocal = { theta: num(slide, 'rope_theta', D.rope_local_base_freq, file), linearFactor: linearFactor(slide, file, 'rope_parameters.sliding_attention'), rotaryFraction: 1 };
  } else {
    ropeGlobal = { theta: num(text, 'rope_theta', D.rope_theta, file), linearFactor: linearFactor(text.rope_scaling, file, 'rope_scaling'), rotaryFraction: 1 };
    ropeLocal = { theta: num(text, 'rope_local_base_freq', D.rope_local_base_freq, file), linearFactor: 1, rotaryFraction: 1 };
  }

  const softcap = text.final_logit_softcapping;
  if (softcap !== undefined && softcap !== null && (typeof softcap !== 'number' || !(softcap > 0) || !Number.isFinite(softcap))) {
    throw new LutraError(`${file}: final_logit_softcapping is ${JSON.stringify(softcap)}; expected null or a number > 0`);
  }
  const cfg: Gemma3Config = {
    modelType: 'gemma3_text',
    vocabSize: num(text, 'vocab_size', D.vocab_size, file),
    hiddenSize: num(text, 'hidden_size', D.hidden_size, file),
    intermediateSize: num(text, 'intermediate_size', D.intermediate_size, file),
    numLayers,
    numHeads: num(text, 'num_attention_heads', D.num_attention_heads, file),
    numKvHeads: num(text, 'num_key_value_heads', D.num_key_value_heads, file),
    headDim: num(text, 'head_dim', D.head_dim, file),
    queryPreAttnScalar: num(text, 'query_pre_attn_scalar', D.query_pre_attn_scalar, file),
    slidingWindow: num(text, 'sliding_window', D.sliding_window, file),
    maxPositions: num(text, 'max_position_embeddings', D.max_position_embeddings, file),
    rmsNormEps: num(text, 'rms_norm_eps', D.rms_norm_eps, file),
    layerTypes,
    ropeGlobal,
    ropeLocal,
    tieWordEmbeddings: typeof text.tie_word_embeddings === 'boolean' ? text.tie_word_embeddings : D.tie_word_embeddings,
    finalLogitSoftcapping: typeof softcap === 'number' ? softcap : null,
    // Token ids of multimodal checkpoints live at the top level.
    bosTokenId: num(top, 'bos_token_id', num(text, 'bos_token_id', D.bos_token_id, file), file),
    eosTokenIds: tokenIds(top.eos_token_id ?? text.eos_token_id, [D.eos_token_id], file),
    padTokenId: num(top, 'pad_token_id', num(text, 'pad_token_id', D.pad_token_id, file), file),
    hiddenActivation: typeof text.hidden_activation === 'string' ? text.hidden_activation : D.hidden_activation,
  };
  validate(cfg, file);
  return cfg;
}

/** Key names as config.json spells them, for messages. */
const KEYS: Record<keyof typeof LIMITS, keyof Gemma3Config> = {
  vocab_size: 'vocabSize',
  hidden_size: 'hiddenSize',
  intermediate_size: 'intermediateSize',
  num_hidden_layers: 'numLayers',
  num_attention_heads: 'numHeads',
  num_key_value_heads: 'numKvHeads',
  head_dim: 'headDim',
  sliding_window: 'slidingWindow',
  max_position_embeddings: 'maxPositions',
};

function validate(c: Gemma3Config, file: string): void {
  for (const [key, field] of Object.entries(KEYS) as [keyof typeof LIMITS, keyof Gemma3Config][]) {
    checkInt(file, key, c[field] as number, 1, LIMITS[key]);
  }
  if (c.numHeads % c.numKvHeads !== 0) {
    throw new LutraError(`${file}: num_attention_heads (${c.numHeads}) must be a multiple of num_key_value_heads (${c.numKvHeads})`);
  }
  if (c.headDim % 2 !== 0) throw new LutraError(`${file}: head_dim must be even for RoPE, got ${c.headDim}`);
  checkPositive(file, 'rms_norm_eps', c.rmsNormEps);
  checkPositive(file, 'query_pre_attn_scalar', c.queryPreAttnScalar);
  checkPositive(file, 'rope_theta', c.ropeGlobal.theta);
  checkPositive(file, 'rope_local_base_freq', c.ropeLocal.theta);
  const tokens: [string, number][] = [['bos_token_id', c.bosTokenId], ['pad_token_id', c.padTokenId], ...c.eosTokenIds.map((id) => ['eos_token_id', id] as [string, number])];
  for (const [key, id] of tokens) checkInt(file, key, id, 0, c.vocabSize - 1);
  if (c.hiddenActivation === 'gelu') {
    throw new LutraError(
      `${file}: hidden_activation "gelu" is the exact erf GELU; lutra implements gelu_pytorch_tanh only (what Gemma 3 checkpoints use)`,
    );
  }
  if (c.hiddenActivation !== 'gelu_pytorch_tanh') {
    throw new LutraError(`${file}: hidden_activation "${c.hiddenActivation}" is not supported; lutra implements gelu_pytorch_tanh only (what Gemma 3 uses)`);
  }
}

export function isSliding(c: { layerTypes: LayerType[] }, layer: number): boolean {
  return c.layerTypes[layer] === 'sliding_attention';
}
