// Gemma 4 text config resolution: mirrors Gemma4TextConfig's class defaults (Hub configs are
// sparse: they list only the fields that differ from these), its layer pattern and per-type RoPE
// parameters, and derives each layer's shape (head size, KV heads, K = V, MLP width, KV source).
import { LutraError } from '../../util/errors.js';
import type { Gemma4Config, Gemma4Layer, LayerType, RopeParams } from '../config-types.js';
import { checkInt, checkPositive, num, SIZE_LIMITS, tokenIds, type Json } from '../config-fields.js';


const DEFAULTS = {
  vocab_size: 262144,
  hidden_size: 2304,
  intermediate_size: 9216,
  num_hidden_layers: 30,
  num_attention_heads: 8,
  num_key_value_heads: 4,
  head_dim: 256,
  global_head_dim: 512,
  hidden_activation: 'gelu_pytorch_tanh',
  max_position_embeddings: 131072,
  rms_norm_eps: 1e-6,
  pad_token_id: 0,
  eos_token_id: 1,
  bos_token_id: 2,
  tie_word_embeddings: true,
  sliding_window: 512,
  vocab_size_per_layer_input: 262144,
  hidden_size_per_layer_input: 256,
  attention_k_eq_v: false,
  num_kv_shared_layers: 0,
  enable_moe_block: false,
  use_double_wide_mlp: false,
};

/** Without layer_types, every 6th layer is full attention; the last layer always is. */
const DEFAULT_PATTERN = 6;

/** rope_parameters when the config has none (or lacks one layer type's entry). */
const DEFAULT_ROPE: Record<LayerType, Json> = {
  sliding_attention: { rope_type: 'default', rope_theta: 10_000 },
  full_attention: { rope_type: 'proportional', partial_rotary_factor: 0.25, rope_theta: 1_000_000 },
};

/**
 * Upper bounds far above any Gemma 4 (31B: 60 layers, hidden 5376, MLP 21504; 26B-A4B: 128
 * experts), low enough that a damaged config is refused before it sizes an allocation.
 */
const LIMITS = {
  ...SIZE_LIMITS,
  hidden_size_per_layer_input: 2 ** 14,
  num_experts: 2 ** 12,
  moe_intermediate_size: 2 ** 18,
};


/** A number field that may be null (absent and null both give null). */
function numOrNull(src: Json, key: string, file: string): number | null {
  const v = src[key];
  if (v === undefined || v === null) return null;
  return num(src, key, 0, file);
}

function bool(src: Json, key: string, fallback: boolean, file: string): boolean {
  const v = src[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'boolean') throw new LutraError(`${file}: field "${key}" must be true or false, got ${JSON.stringify(v)}`);
  return v;
}




/**
 * One layer type's RoPE entry. Supported: "default" (every pair rotates), "proportional" (the
 * first floor(partial_rotary_factor·headDim/2) pairs rotate with exponents over the whole head,
 * the rest stay put; an optional "factor" divides the frequencies) and "linear" (every pair,
 * frequencies divided by "factor").
 */
function ropeParams(entry: unknown, type: LayerType, file: string): RopeParams {
  const where = `rope_parameters.${type}`;
  if (entry === undefined || entry === null) entry = DEFAULT_ROPE[type];
  if (typeof entry !== 'object' || Array.isArray(entry)) throw new LutraError(`${file}: ${where} must be an object, got ${JSON.stringify(entry)}`);
  const e = entry as Json;
  const ropeType = e.rope_type ?? e.type ?? 'default';
  const theta = num(e, 'rope_theta', DEFAULT_ROPE[type].rope_theta as number, file);
  checkPositive(file, `${where}.rope_theta`, theta);
  const factor = num(e, 'factor', 1, file);
  checkPositive(file, `${where}.factor`, factor);
  const fraction = num(e, 'partial_rotary_factor', 1, file);
  if (!(fraction > 0 && fraction <= 1)) throw new LutraError(`${file}: ${where}.partial_rotary_factor is ${fraction}; expected a number in (0, 1]`);
  switch (ropeType) {
    case 'proportional':
      return { theta, linearFactor: factor, rotaryFraction: fraction };
    case 'default':
    case 'linear':
      // HF's default and linear RoPE with a partial factor rotate a shorter head (exponents over
      // the rotated part only) — not the proportional layout lutra implements.
      if (fraction !== 1) {
        throw new LutraError(`${file}: ${where} has rope type "${ropeType}" with partial_rotary_factor ${fraction}; lutra supports a partial factor only with "proportional"`);
      }
      if (ropeType === 'default' && factor !== 1) {
        throw new LutraError(`${file}: ${where} has rope type "default" with factor ${factor}, which HF ignores; use "linear" or "proportional" to scale`);
      }
      if (ropeType === 'linear' && e.factor === undefined) throw new LutraError(`${file}: ${where} has rope type "linear" without a "factor"`);
      return { theta, linearFactor: factor, rotaryFraction: 1 };
    default:
      throw new LutraError(`${file}: ${where}.rope_type is ${JSON.stringify(ropeType)}; expected "default", "proportional" or "linear"`);
  }
}

/**
 * Resolve a parsed config.json (model_type "gemma4_text", or the multimodal "gemma4" with the
 * text model in "text_config") into a complete Gemma4Config. `file` names the config in errors.
 *
 * Normalisations: num_global_key_value_heads is kept only with attention_k_eq_v (HF uses it
 * nowhere else), and the expert fields only with enable_moe_block; otherwise they are null.
 */
export function resolveGemma4Config(raw: Json, file = 'config.json'): Gemma4Config {
  const top = raw;
  let text: Json = raw;
  const topType = top.model_type;
  if (topType === 'gemma4') {
    if (typeof top.text_config !== 'object' || top.text_config === null || Array.isArray(top.text_config)) {
      throw new LutraError(`${file}: model_type "gemma4" (multimodal) but no "text_config" object`);
    }
    text = top.text_config as Json;
    if (text.model_type !== undefined && text.model_type !== 'gemma4_text') {
      throw new LutraError(`${file}: text_config.model_type is ${JSON.stringify(text.model_type)}, expected "gemma4_text"`);
    }
  } else if (topType !== 'gemma4_text') {
    throw new LutraError(`${file}: model_type is ${JSON.stringify(topType)}; expected a Gemma 4 text model ("gemma4_text", or "gemma4" with a text_config)`);
  }

  const D = DEFAULTS;
  const numLayers = num(text, 'num_hidden_layers', D.num_hidden_layers, file);
  checkInt(file, 'num_hidden_layers', numLayers, 1, LIMITS.num_hidden_layers);

  let layerTypes: LayerType[];
  const lt = text.layer_types;
  if (lt !== undefined && lt !== null) {
    if (!Array.isArray(lt)) throw new LutraError(`${file}: layer_types must be an array, got ${JSON.stringify(lt)}`);
    layerTypes = lt.map((t, i) => {
      if (t !== 'sliding_attention' && t !== 'full_attention') {
        throw new LutraError(`${file}: layer_types[${i}] is ${JSON.stringify(t)}, expected "sliding_attention" or "full_attention"`);
      }
      return t;
    });
    if (layerTypes.length !== numLayers) {
      throw new LutraError(`${file}: layer_types has ${layerTypes.length} entries but num_hidden_layers is ${numLayers}`);
    }
  } else {
    layerTypes = Array.from({ length: numLayers }, (_, i) => ((i + 1) % DEFAULT_PATTERN !== 0 ? 'sliding_attention' : 'full_attention'));
  }
  // HF forces the last layer to full attention, whatever layer_types says.
  layerTypes[numLayers - 1] = 'full_attention';

  const rp = text.rope_parameters;
  let ropeLocal: RopeParams;
  let ropeGlobal: RopeParams;
  if (rp === undefined || rp === null) {
    ropeLocal = ropeParams(undefined, 'sliding_attention', file);
    ropeGlobal = ropeParams(undefined, 'full_attention', file);
  } else {
    if (typeof rp !== 'object' || Array.isArray(rp)) throw new LutraError(`${file}: rope_parameters must be an object, got ${JSON.stringify(rp)}`);
    const r = rp as Json;
    if (!('sliding_attention' in r) && !('full_attention' in r)) {
      throw new LutraError(`${file}: rope_parameters has no "sliding_attention" or "full_attention" entry; Gemma 4 sets RoPE per layer type`);
    }
    ropeLocal = ropeParams(r.sliding_attention, 'sliding_attention', file);
    ropeGlobal = ropeParams(r.full_attention, 'full_attention', file);
  }

  const bidi = text.use_bidirectional_attention;
  if (bidi !== undefined && bidi !== null && bidi !== 'vision') {
    throw new LutraError(
      `${file}: use_bidirectional_attention is ${JSON.stringify(bidi)}; lutra runs causal text generation (null, or "vision" which affects image tokens only)`,
    );
  }

  const softcap = text.final_logit_softcapping;
  if (softcap !== undefined && softcap !== null && (typeof softcap !== 'number' || !(softcap > 0) || !Number.isFinite(softcap))) {
    throw new LutraError(`${file}: final_logit_softcapping is ${JSON.stringify(softcap)}; expected null or a number > 0`);
  }

  const headDim = num(text, 'head_dim', D.head_dim, file);
  // An explicit null global_head_dim makes full layers use head_dim, as HF does.
  const globalHeadDim = text.global_head_dim === null ? headDim : num(text, 'global_head_dim', D.global_head_dim, file);
  const attentionKEqV = bool(text, 'attention_k_eq_v', D.attention_k_eq_v, file);
  const enableMoeBlock = bool(text, 'enable_moe_block', D.enable_moe_block, file);
  const hiddenActivation = text.hidden_activation ?? D.hidden_activation;
  if (typeof hiddenActivation !== 'string') throw new LutraError(`${file}: field "hidden_activation" must be a string, got ${JSON.stringify(hiddenActivation)}`);

  const cfg: Gemma4Config = {
    modelType: 'gemma4_text',
    vocabSize: num(text, 'vocab_size', D.vocab_size, file),
    hiddenSize: num(text, 'hidden_size', D.hidden_size, file),
    numLayers,
    numHeads: num(text, 'num_attention_heads', D.num_attention_heads, file),
    slidingWindow: num(text, 'sliding_window', D.sliding_window, file),
    maxPositions: num(text, 'max_position_embeddings', D.max_position_embeddings, file),
    rmsNormEps: num(text, 'rms_norm_eps', D.rms_norm_eps, file),
    layerTypes,
    tieWordEmbeddings: bool(text, 'tie_word_embeddings', bool(top, 'tie_word_embeddings', D.tie_word_embeddings, file), file),
    finalLogitSoftcapping: typeof softcap === 'number' ? softcap : null,
    // Token ids of multimodal checkpoints may live at the top level.
    bosTokenId: num(top, 'bos_token_id', num(text, 'bos_token_id', D.bos_token_id, file), file),
    eosTokenIds: tokenIds(top.eos_token_id ?? text.eos_token_id, [D.eos_token_id], file),
    padTokenId: num(top, 'pad_token_id', num(text, 'pad_token_id', D.pad_token_id, file), file),
    hiddenActivation,
    intermediateSize: num(text, 'intermediate_size', D.intermediate_size, file),
    numKvHeads: num(text, 'num_key_value_heads', D.num_key_value_heads, file),
    headDim,
    globalHeadDim,
    numGlobalKvHeads: attentionKEqV ? numOrNull(text, 'num_global_key_value_heads', file) : null,
    attentionKEqV,
    useDoubleWideMlp: bool(text, 'use_double_wide_mlp', D.use_double_wide_mlp, file),
    hiddenSizePerLayerInput: num(text, 'hidden_size_per_layer_input', D.hidden_size_per_layer_input, file),
    vocabSizePerLayerInput: num(text, 'vocab_size_per_layer_input', D.vocab_size_per_layer_input, file),
    numKvSharedLayers: num(text, 'num_kv_shared_layers', D.num_kv_shared_layers, file),
    ropeLocal,
    ropeGlobal,
    enableMoeBlock,
    numExperts: enableMoeBlock ? numOrNull(text, 'num_experts', file) : null,
    topKExperts: enableMoeBlock ? numOrNull(text, 'top_k_experts', file) : null,
    moeIntermediateSize: enableMoeBlock ? numOrNull(text, 'moe_intermediate_size', file) : null,
    layers: [],
  };
  validate(cfg, file);
  cfg.layers = deriveLayers(cfg, file);
  return cfg;
}

/** Key names as config.json spells them, for messages. */
const KEYS: [keyof typeof LIMITS, keyof Gemma4Config][] = [
  ['vocab_size', 'vocabSize'],
  ['hidden_size', 'hiddenSize'],
  ['intermediate_size', 'intermediateSize'],
  ['num_hidden_layers', 'numLayers'],
  ['num_attention_heads', 'numHeads'],
  ['num_key_value_heads', 'numKvHeads'],
  ['head_dim', 'headDim'],
  ['sliding_window', 'slidingWindow'],
  ['max_position_embeddings', 'maxPositions'],
];

function validate(c: Gemma4Config, file: string): void {
  for (const [key, field] of KEYS) checkInt(file, key, c[field] as number, 1, LIMITS[key]);
  checkInt(file, 'global_head_dim', c.globalHeadDim, 1, LIMITS.head_dim);
  if (c.numHeads % c.numKvHeads !== 0) {
    throw new LutraError(`${file}: num_attention_heads (${c.numHeads}) must be a multiple of num_key_value_heads (${c.numKvHeads})`);
  }
  if (c.numGlobalKvHeads !== null) {
    checkInt(file, 'num_global_key_value_heads', c.numGlobalKvHeads, 1, LIMITS.num_key_value_heads);
    if (c.numHeads % c.numGlobalKvHeads !== 0) {
      throw new LutraError(`${file}: num_attention_heads (${c.numHeads}) must be a multiple of num_global_key_value_heads (${c.numGlobalKvHeads})`);
    }
  }
  if (c.headDim % 2 !== 0) throw new LutraError(`${file}: head_dim must be even for RoPE, got ${c.headDim}`);
  if (c.globalHeadDim % 2 !== 0) throw new LutraError(`${file}: global_head_dim must be even for RoPE, got ${c.globalHeadDim}`);
  checkPositive(file, 'rms_norm_eps', c.rmsNormEps);
  checkInt(file, 'hidden_size_per_layer_input', c.hiddenSizePerLayerInput, 0, LIMITS.hidden_size_per_layer_input);
  if (c.hiddenSizePerLayerInput > 0) checkInt(file, 'vocab_size_per_layer_input', c.vocabSizePerLayerInput, 1, LIMITS.vocab_size);
  checkInt(file, 'num_kv_shared_layers', c.numKvSharedLayers, 0, c.numLayers - 1);
  if (c.enableMoeBlock) {
    for (const [key, v] of [['num_experts', c.numExperts], ['top_k_experts', c.topKExperts], ['moe_intermediate_size', c.moeIntermediateSize]] as const) {
      if (v === null) throw new LutraError(`${file}: enable_moe_block is true but ${key} is not set`);
    }
    checkInt(file, 'num_experts', c.numExperts!, 1, LIMITS.num_experts);
    checkInt(file, 'top_k_experts', c.topKExperts!, 1, c.numExperts!);
    checkInt(file, 'moe_intermediate_size', c.moeIntermediateSize!, 1, LIMITS.moe_intermediate_size);
  }
  const tokens: [string, number][] = [['bos_token_id', c.bosTokenId], ['pad_token_id', c.padTokenId], ...c.eosTokenIds.map((id) => ['eos_token_id', id] as [string, number])];
  for (const [key, id] of tokens) checkInt(file, key, id, 0, c.vocabSize - 1);
  if (c.hiddenActivation !== 'gelu_pytorch_tanh') {
    throw new LutraError(`${file}: hidden_activation "${c.hiddenActivation}" is not supported; lutra implements gelu_pytorch_tanh only (what Gemma 4 uses)`);
  }
}

/**
 * Per-layer shapes. KV sharing: with first = L − num_kv_shared_layers, a layer i ≥ first has no
 * K/V of its own and reads those of the last layer before `first` of the same type.
 */
function deriveLayers(c: Gemma4Config, file: string): Gemma4Layer[] {
  const first = c.numLayers - c.numKvSharedLayers;
  return c.layerTypes.map((type, i) => {
    const sliding = type === 'sliding_attention';
    const kEqV = !sliding && c.attentionKEqV;
    const shared = i >= first;
    let kvSource = i;
    if (shared) {
      kvSource = c.layerTypes.lastIndexOf(type, first - 1);
      if (kvSource < 0) {
        throw new LutraError(
          `${file}: layer ${i} is KV-shared (num_kv_shared_layers ${c.numKvSharedLayers}) but no layer before ${first} is ${type} to share with`,
        );
      }
    }
    return {
      sliding,
      headDim: sliding ? c.headDim : c.globalHeadDim,
      numKvHeads: kEqV && c.numGlobalKvHeads !== null ? c.numGlobalKvHeads : c.numKvHeads,
      kEqV,
      intermediateSize: shared && c.useDoubleWideMlp ? 2 * c.intermediateSize : c.intermediateSize,
      kvSource,
    };
  });
}

/**
 * Why llama.cpp's gemma4 loader cannot run `cfg`, as far as KV sharing goes, or null. llama.cpp
 * hard-codes the sources: with first = L − shared, every shared sliding layer reads layer
 * first − 2 and every shared full layer reads layer first − 1; it aborts when that is not the
 * layer HF's rule picks.
 */
export function llamaCppKvSharingProblem(cfg: Gemma4Config): string | null {
  const first = cfg.numLayers - cfg.numKvSharedLayers;
  for (let i = first; i < cfg.numLayers; i++) {
    const layer = cfg.layers[i]!;
    const llama = layer.sliding ? first - 2 : first - 1;
    if (layer.kvSource !== llama) {
      const kind = layer.sliding ? 'sliding' : 'full';
      return (
        `KV sharing: llama.cpp makes every shared ${kind} layer read layer ${llama}, ` +
        `but layer ${i} reads layer ${layer.kvSource} (the last ${kind} layer before the shared block at ${first}), so llama.cpp would refuse the model`
      );
    }
  }
  return null;
}
