// Gemma 4 text models in the GGUF layout of llama.cpp's `gemma4` architecture: tensor names (both
// ways), the gemma4.* metadata, the model-level rope_freqs tensor that encodes proportional RoPE,
// and an HF-style config.json rebuilt from such a file.
//
// Layout facts this module relies on (what llama.cpp's gemma4 loader reads):
// - Integer hparams are UINT32, reals FLOAT32; head_count_kv and feed_forward_length are per-layer
//   INT32 arrays (llama.cpp accepts one number or an array of block_count entries).
// - Full-attention layers use key_length (= global_head_dim) and rope.dimension_count (the whole
//   global head); sliding layers use key_length_swa / rope.dimension_count_swa (= head_dim).
// - Proportional RoPE: llama.cpp divides pair j's angle by rope_freqs[j]; 1 keeps HF's frequency
//   base^(-2j/global_head_dim), 1e30 makes the angle zero, which is HF's zero frequency for the
//   pairs past R = floor(partial_rotary_factor·global_head_dim/2). Sliding layers have no factors.
// - K = V full layers have no attn_v tensor; KV-shared layers need no attn_k/attn_v/attn_k_norm.
// - Norm weights are stored as in the checkpoint (Gemma 4 norms multiply by w, not 1 + w).
import { LutraError } from '../../util/errors.js';
import type { Gemma4Config, LayerType } from '../config-types.js';
import { decodeTensor, ggufNumber, ggufString, kv } from '../../io/gguf.js';
import { shortestF32 } from '../config-fields.js';
import type { GgufFile, GgufMetadataEntry, GgufValue } from '../../io/gguf.js';

/** The model-level RoPE factor tensor, generated from the config (no HF tensor of its own). */
export const GEMMA4_ROPE_FREQS_TENSOR = 'rope_freqs.weight';

// ---------------------------------------------------------------------------------------------
// Metadata

/** A value at or above this in rope_freqs marks a pair that does not rotate. */
const NO_ROTATION = 1e30;

/** Pairs of a full-attention head that rotate: floor(fraction · global_head_dim / 2). */
function rotatedPairs(cfg: Gemma4Config): number {
  return Math.floor((cfg.ropeGlobal.rotaryFraction * cfg.globalHeadDim) / 2);
}

/** Refuses what llama.cpp's gemma4 graph cannot express. */
function checkExpressible(cfg: Gemma4Config): void {
  if (cfg.ropeGlobal.linearFactor !== 1 || cfg.ropeLocal.linearFactor !== 1) {
    throw new LutraError('GGUF (gemma4): the config scales RoPE by a factor, which llama.cpp\'s gemma4 graph does not read');
  }
  if (cfg.ropeLocal.rotaryFraction !== 1) {
    throw new LutraError('GGUF (gemma4): sliding-attention RoPE with partial_rotary_factor < 1 cannot be expressed (llama.cpp has RoPE factors on full layers only)');
  }
}

/**
 * The model's GGUF metadata for llama.cpp's gemma4 loader: general.architecture/name/file_type and
 * every gemma4.* hparam (tokenizer keys are separate). `fileType` is the llama_ftype number.
 */
export function gemma4GgufMetadata(cfg: Gemma4Config, name: string, fileType: number): GgufMetadataEntry[] {
  checkExpressible(cfg);
  const A = 'gemma4';
  const m: GgufMetadataEntry[] = [
    kv.str('general.architecture', A),
    kv.str('general.name', name),
    kv.u32('general.file_type', fileType),
    kv.u32(`${A}.context_length`, cfg.maxPositions),
    kv.u32(`${A}.embedding_length`, cfg.hiddenSize),
    kv.u32(`${A}.block_count`, cfg.numLayers),
    kv.arr.i32(`${A}.feed_forward_length`, cfg.layers.map((l) => l.intermediateSize)),
    kv.u32(`${A}.attention.head_count`, cfg.numHeads),
    kv.arr.i32(`${A}.attention.head_count_kv`, cfg.layers.map((l) => l.numKvHeads)),
    kv.u32(`${A}.attention.key_length`, cfg.globalHeadDim),
    kv.u32(`${A}.attention.value_length`, cfg.globalHeadDim),
    kv.u32(`${A}.attention.key_length_swa`, cfg.headDim),
    kv.u32(`${A}.attention.value_length_swa`, cfg.headDim),
    kv.u32(`${A}.rope.dimension_count`, cfg.globalHeadDim),
    kv.u32(`${A}.rope.dimension_count_swa`, cfg.headDim),
    kv.f32(`${A}.rope.freq_base`, cfg.ropeGlobal.theta),
    kv.f32(`${A}.rope.freq_base_swa`, cfg.ropeLocal.theta),
    kv.u32(`${A}.attention.sliding_window`, cfg.slidingWindow),
    kv.arr.bool(`${A}.attention.sliding_window_pattern`, cfg.layers.map((l) => l.sliding)),
    kv.f32(`${A}.attention.layer_norm_rms_epsilon`, cfg.rmsNormEps),
    kv.u32(`${A}.attention.shared_kv_layers`, cfg.numKvSharedLayers),
    kv.u32(`${A}.embedding_length_per_layer_input`, cfg.hiddenSizePerLayerInput),
  ];
  if (cfg.finalLogitSoftcapping !== null) m.push(kv.f32(`${A}.final_logit_softcapping`, cfg.finalLogitSoftcapping));
  if (cfg.enableMoeBlock) {
    m.push(
      kv.u32(`${A}.expert_count`, cfg.numExperts!),
      kv.u32(`${A}.expert_used_count`, cfg.topKExperts!),
      kv.u32(`${A}.expert_feed_forward_length`, cfg.moeIntermediateSize!),
    );
  }
  return m;
}

/**
 * The model-level `rope_freqs.weight` [global_head_dim/2]: 1 for the pairs that rotate, 1e30 (a
 * zero angle) for the rest.
 */
export function gemma4RopeFreqs(cfg: Gemma4Config): Float32Array {
  checkExpressible(cfg);
  const out = new Float32Array(cfg.globalHeadDim / 2);
  const R = rotatedPairs(cfg);
  for (let j = 0; j < out.length; j++) out[j] = j < R ? 1 : NO_ROTATION;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Config from a GGUF file

/**
 * GGUF stores float hparams as f32: 1e-6 comes back as 9.99999997e-7. The shortest decimal that
 * rounds to the same f32 is what the original config.json said (and what HF computes with).
 */

type PerLayer = { values: number[]; isArray: boolean };

/** A "scalar or per-layer array" key as one number per layer. */
function perLayer(f: GgufFile, key: string, layers: number, fallback?: number): PerLayer | undefined {
  const v: GgufValue | undefined = f.metadata.get(key);
  if (v === undefined) {
    return fallback === undefined ? undefined : { values: new Array<number>(layers).fill(fallback), isArray: false };
  }
  if (typeof v === 'number') return { values: new Array<number>(layers).fill(v), isArray: false };
  if (v instanceof Int32Array || v instanceof Uint32Array) {
    if (v.length !== layers) throw new LutraError(`${f.path}: GGUF metadata "${key}" has ${v.length} entries but block_count is ${layers}`);
    return { values: Array.from(v), isArray: true };
  }
  throw new LutraError(`${f.path}: GGUF metadata "${key}" must be a number or an INT32/UINT32 array of block_count entries`);
}

/** The one value every listed layer has, or a LutraError naming the key and a differing layer. */
function uniform(f: GgufFile, key: string, values: number[], layers: number[], what: string): number | undefined {
  if (layers.length === 0) return undefined;
  const v = values[layers[0]!]!;
  for (const i of layers) {
    if (values[i] !== v) {
      throw new LutraError(`${f.path}: GGUF metadata "${key}" gives layer ${i} ${values[i]} but layer ${layers[0]} ${v}; Gemma 4 has one value for ${what}`);
    }
  }
  return v;
}

/**
 * An HF-style config.json (model_type gemma4_text) rebuilt from a gemma4 GGUF, for
 * resolveGemma4Config. Besides the gemma4.* keys it reads:
 * - rope_freqs.weight (required, as for llama.cpp): how many pairs of a full head rotate, i.e.
 *   partial_rotary_factor of the proportional RoPE;
 * - which tensors exist: attn_v missing on the full layers that have their own attn_k means
 *   attention_k_eq_v (in a file without layer tensors, K = V is assumed when full and sliding
 *   layers have different KV-head counts, the only case in which they may differ), and
 *   output.weight present means untied embeddings;
 * - tokenizer.ggml.bos/eos/padding_token_id when present.
 * `vocabSize` is the row count of token_embd.weight (also used for the per-layer embedding table,
 * which llama.cpp requires to have as many rows). Errors name the GGUF key or tensor.
 */
export function gemma4ConfigFromGguf(f: GgufFile, vocabSize: number): Record<string, unknown> {
  const arch = ggufString(f, 'general.architecture', true);
  if (arch !== 'gemma4') throw new LutraError(`${f.path}: general.architecture is "${arch}"; expected a gemma4 GGUF file`);
  const A = 'gemma4';
  const n = (key: string) => shortestF32(ggufNumber(f, `${A}.${key}`, true));
  const opt = (key: string) => {
    const v = ggufNumber(f, `${A}.${key}`);
    return v === undefined ? undefined : shortestF32(v);
  };

  const L = n('block_count');
  if (!Number.isInteger(L) || L < 1 || L > 1024) throw new LutraError(`${f.path}: GGUF metadata "${A}.block_count" is ${L}; expected an integer in [1, 1024]`);
  const hidden = n('embedding_length');
  const all = Array.from({ length: L }, (_, i) => i);

  if (!f.metadata.has(`${A}.attention.head_count`)) throw new LutraError(`${f.path}: GGUF metadata key "${A}.attention.head_count" is missing`);
  const headsPl = perLayer(f, `${A}.attention.head_count`, L)!;
  const heads = uniform(f, `${A}.attention.head_count`, headsPl.values, all, 'the number of attention heads')!;

  // Layer pattern: one entry per layer, true = sliding; llama.cpp reads missing entries as full.
  const patKey = `${A}.attention.sliding_window_pattern`;
  const pat = f.metadata.get(patKey);
  if (pat === undefined) throw new LutraError(`${f.path}: GGUF metadata key "${patKey}" is missing`);
  let slidingFlags: boolean[];
  if (Array.isArray(pat) && pat.every((x) => typeof x === 'boolean')) slidingFlags = pat as boolean[];
  else if (pat instanceof Int32Array || pat instanceof Uint32Array) slidingFlags = Array.from(pat, (x) => x !== 0);
  else throw new LutraError(`${f.path}: GGUF metadata "${patKey}" must be a BOOL (or INT32/UINT32) array, one entry per layer`);
  if (slidingFlags.length > L) throw new LutraError(`${f.path}: GGUF metadata "${patKey}" has ${slidingFlags.length} entries but block_count is ${L}`);
  const sliding = all.map((i) => slidingFlags[i] === true);
  if (sliding[L - 1]) {
    throw new LutraError(`${f.path}: GGUF metadata "${patKey}" marks the last layer sliding; Gemma 4 always makes the last layer full attention`);
  }
  const layerTypes: LayerType[] = sliding.map((s) => (s ? 'sliding_attention' : 'full_attention'));
  const slidingLayers = all.filter((i) => sliding[i]);
  const fullLayers = all.filter((i) => !sliding[i]);

  const shared = opt('attention.shared_kv_layers') ?? 0;
  if (!Number.isInteger(shared) || shared < 0 || shared >= L) {
    throw new LutraError(`${f.path}: GGUF metadata "${A}.attention.shared_kv_layers" is ${shared}; expected an integer in [0, ${L - 1}]`);
  }
  const first = L - shared;
  const own = all.filter((i) => i < first);
  const sharedLayers = all.filter((i) => i >= first);

  // Head sizes: full layers key_length (llama.cpp's default: hidden/heads), sliding layers *_swa.
  const keyLen = opt('attention.key_length') ?? hidden / heads;
  const valLen = opt('attention.value_length') ?? keyLen;
  if (valLen !== keyLen) throw new LutraError(`${f.path}: GGUF metadata "${A}.attention.value_length" (${valLen}) differs from key_length (${keyLen})`);
  const keyLenSwa = n('attention.key_length_swa');
  const valLenSwa = opt('attention.value_length_swa') ?? keyLenSwa;
  if (valLenSwa !== keyLenSwa) throw new LutraError(`${f.path}: GGUF metadata "${A}.attention.value_length_swa" (${valLenSwa}) differs from key_length_swa (${keyLenSwa})`);
  const ropeDims = opt('rope.dimension_count') ?? keyLen;
  if (ropeDims !== keyLen) {
    throw new LutraError(`${f.path}: GGUF metadata "${A}.rope.dimension_count" is ${ropeDims}; Gemma 4 rotates over the whole full-attention head (${keyLen}), the rotated part is set by rope_freqs`);
  }
  const ropeDimsSwa = opt('rope.dimension_count_swa') ?? ropeDims;
  if (ropeDimsSwa !== keyLenSwa) {
    throw new LutraError(`${f.path}: GGUF metadata "${A}.rope.dimension_count_swa" is ${ropeDimsSwa}; Gemma 4 rotates the whole sliding-attention head (${keyLenSwa})`);
  }

  // Which tensors exist, where a layer has any: they decide K = V (no attn_v) and the tied head.
  const has = (name: string) => f.tensorsByName.has(name);
  const ownFullWithK = fullLayers.filter((i) => i < first && has(`blk.${i}.attn_k.weight`));
  for (const i of slidingLayers) {
    if (i < first && has(`blk.${i}.attn_k.weight`) && !has(`blk.${i}.attn_v.weight`)) {
      throw new LutraError(`${f.path}: tensor "blk.${i}.attn_v.weight" is missing on a sliding layer; Gemma 4 takes V from K only on full-attention layers`);
    }
  }
  let kEqVFromTensors: boolean | undefined;
  if (ownFullWithK.length > 0) {
    const noV = ownFullWithK.filter((i) => !has(`blk.${i}.attn_v.weight`));
    if (noV.length !== 0 && noV.length !== ownFullWithK.length) {
      throw new LutraError(`${f.path}: tensor "blk.${noV[0]}.attn_v.weight" is missing but other full-attention layers have theirs; Gemma 4 has K = V on all full layers or none`);
    }
    kEqVFromTensors = noV.length > 0;
  }

  // KV heads: uniform on sliding layers; full layers differ only with K = V.
  const kvPl = perLayer(f, `${A}.attention.head_count_kv`, L, heads)!;
  const kvSliding = uniform(f, `${A}.attention.head_count_kv`, kvPl.values, slidingLayers, 'the KV heads of sliding layers');
  const kvFull = uniform(f, `${A}.attention.head_count_kv`, kvPl.values, fullLayers, 'the KV heads of full-attention layers')!;
  const kEqV = kEqVFromTensors ?? (kvSliding !== undefined && kvFull !== kvSliding);
  if (!kEqV && kvSliding !== undefined && kvFull !== kvSliding) {
    throw new LutraError(
      `${f.path}: GGUF metadata "${A}.attention.head_count_kv" gives full layers ${kvFull} KV heads and sliding layers ${kvSliding}, but the full layers have V projections; Gemma 4 differs only with K = V`,
    );
  }

  // MLP widths: one width on layers with their own K/V; KV-shared layers have it or twice it.
  const ffKey = `${A}.feed_forward_length`;
  if (!f.metadata.has(ffKey)) throw new LutraError(`${f.path}: GGUF metadata key "${ffKey}" is missing`);
  const ff = perLayer(f, ffKey, L)!;
  const inter = uniform(f, ffKey, ff.values, own, 'the MLP width of layers with their own K/V')!;
  const interShared = uniform(f, ffKey, ff.values, sharedLayers, 'the MLP width of KV-shared layers');
  if (interShared !== undefined && interShared !== inter && interShared !== 2 * inter) {
    throw new LutraError(`${f.path}: GGUF metadata "${ffKey}" gives KV-shared layers ${interShared}; Gemma 4 uses ${inter} or twice it (double-wide MLP)`);
  }

  // Proportional RoPE of full layers, from the factors: 1 (rotates) for the first R pairs, huge after.
  const rf = f.tensorsByName.get('rope_freqs.weight');
  if (!rf) throw new LutraError(`${f.path}: tensor "rope_freqs.weight" is missing (llama.cpp's gemma4 needs it for the full-attention RoPE)`);
  if (rf.shape.length !== 1 || rf.shape[0] !== keyLen / 2) {
    throw new LutraError(`${f.path}: tensor "rope_freqs.weight" has shape [${rf.shape}], expected [${keyLen / 2}] (half the full-attention head)`);
  }
  const freqs = decodeTensor(f, rf);
  let R = 0;
  while (R < freqs.length && freqs[R] === 1) R++;
  for (let j = R; j < freqs.length; j++) {
    if (!(freqs[j]! >= NO_ROTATION * 0.99)) {
      throw new LutraError(`${f.path}: tensor "rope_freqs.weight" has ${freqs[j]} at ${j}; expected 1 for rotated pairs followed by 1e30 for the others`);
    }
  }
  if (R === 0) throw new LutraError(`${f.path}: tensor "rope_freqs.weight" rotates no pair of the full-attention head`);
  // A fraction that gives back exactly R pairs (2R/D unless rounding makes floor(·D/2) fall short).
  let fraction = (2 * R) / keyLen;
  if (Math.floor((fraction * keyLen) / 2) !== R) fraction = (2 * R + 1) / keyLen;

  const ple = n('embedding_length_per_layer_input');
  const cfg: Record<string, unknown> = {
    architectures: ['Gemma4ForCausalLM'],
    model_type: 'gemma4_text',
    vocab_size: vocabSize,
    hidden_size: hidden,
    intermediate_size: inter,
    num_hidden_layers: L,
    num_attention_heads: heads,
    num_key_value_heads: kvSliding ?? kvFull,
    head_dim: keyLenSwa,
    global_head_dim: keyLen,
    attention_k_eq_v: kEqV,
    num_global_key_value_heads: kEqV ? kvFull : null,
    max_position_embeddings: n('context_length'),
    rms_norm_eps: n('attention.layer_norm_rms_epsilon'),
    sliding_window: n('attention.sliding_window'),
    layer_types: layerTypes,
    rope_parameters: {
      sliding_attention: { rope_type: 'default', rope_theta: opt('rope.freq_base_swa') ?? 10_000 },
      full_attention: { rope_type: 'proportional', partial_rotary_factor: fraction, rope_theta: opt('rope.freq_base') ?? 10_000 },
    },
    hidden_size_per_layer_input: ple,
    vocab_size_per_layer_input: vocabSize,
    num_kv_shared_layers: shared,
    use_double_wide_mlp: interShared !== undefined && interShared === 2 * inter,
    hidden_activation: 'gelu_pytorch_tanh',
    tie_word_embeddings: !has('output.weight'),
    final_logit_softcapping: opt('final_logit_softcapping') ?? null,
  };

  const experts = opt('expert_count');
  if (experts !== undefined && experts > 0) {
    cfg.enable_moe_block = true;
    cfg.num_experts = experts;
    const used = perLayer(f, `${A}.expert_used_count`, L);
    if (!used) throw new LutraError(`${f.path}: GGUF metadata key "${A}.expert_used_count" is missing (expert_count is set)`);
    cfg.top_k_experts = uniform(f, `${A}.expert_used_count`, used.values, all, 'the experts used per token');
    const width = perLayer(f, `${A}.expert_feed_forward_length`, L);
    if (!width) throw new LutraError(`${f.path}: GGUF metadata key "${A}.expert_feed_forward_length" is missing (expert_count is set)`);
    cfg.moe_intermediate_size = uniform(f, `${A}.expert_feed_forward_length`, width.values, all, 'the expert width');
  } else {
    cfg.enable_moe_block = false;
  }

  for (const [key, field] of [['bos', 'bos_token_id'], ['eos', 'eos_token_id'], ['padding', 'pad_token_id']] as const) {
    const id = ggufNumber(f, `tokenizer.ggml.${key}_token_id`);
    if (id !== undefined) cfg[field] = id;
  }
  return cfg;
}
