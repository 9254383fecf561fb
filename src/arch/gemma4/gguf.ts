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
import type { GgufFile, GgufMetadataEntry, GgufValue } from '../../io/gguf.js';

// ---------------------------------------------------------------------------------------------
// Tensor names

const GLOBAL_NAMES: Record<string, string> = {
  'model.embed_tokens.weight': 'token_embd.weight',
  'lm_head.weight': 'output.weight',
  'model.norm.weight': 'output_norm.weight',
  'model.embed_tokens_per_layer.weight': 'per_layer_token_embd.weight',
  'model.per_layer_model_projection.weight': 'per_layer_model_proj.weight',
  'model.per_layer_projection_norm.weight': 'per_layer_proj_norm.weight',
};

const LAYER_SUFFIX: Record<string, string> = {
  'input_layernorm.weight': 'attn_norm.weight',
  'self_attn.q_proj.weight': 'attn_q.weight',
  'self_attn.k_proj.weight': 'attn_k.weight',
  'self_attn.v_proj.weight': 'attn_v.weight',
  'self_attn.o_proj.weight': 'attn_output.weight',
  'self_attn.q_norm.weight': 'attn_q_norm.weight',
  'self_attn.k_norm.weight': 'attn_k_norm.weight',
  'post_attention_layernorm.weight': 'post_attention_norm.weight',
  'pre_feedforward_layernorm.weight': 'ffn_norm.weight',
  'mlp.gate_proj.weight': 'ffn_gate.weight',
  'mlp.up_proj.weight': 'ffn_up.weight',
  'mlp.down_proj.weight': 'ffn_down.weight',
  'post_feedforward_layernorm.weight': 'post_ffw_norm.weight',
  layer_scalar: 'layer_output_scale.weight',
  // Per-layer embeddings
  'per_layer_input_gate.weight': 'inp_gate.weight',
  'per_layer_projection.weight': 'proj.weight',
  'post_per_layer_input_norm.weight': 'post_norm.weight',
  // Mixture of experts
  'router.proj.weight': 'ffn_gate_inp.weight',
  'router.scale': 'ffn_gate_inp.scale',
  'router.per_expert_scale': 'ffn_down_exps.scale',
  'pre_feedforward_layernorm_2.weight': 'pre_ffw_norm_2.weight',
  'post_feedforward_layernorm_1.weight': 'post_ffw_norm_1.weight',
  'post_feedforward_layernorm_2.weight': 'post_ffw_norm_2.weight',
  'experts.gate_up_proj': 'ffn_gate_up_exps.weight',
  'experts.down_proj': 'ffn_down_exps.weight',
};

const GGUF_GLOBAL = new Map(Object.entries(GLOBAL_NAMES).map(([hf, g]) => [g, hf]));
const GGUF_LAYER = new Map(Object.entries(LAYER_SUFFIX).map(([hf, g]) => [g, hf]));

/** The model-level RoPE factor tensor, generated from the config (no HF tensor of its own). */
export const GEMMA4_ROPE_FREQS_TENSOR = 'rope_freqs.weight';

/**
 * Maps a normalised HF tensor name (`model.` prefix, e.g. `model.layers.3.self_attn.q_proj.weight`,
 * `model.layers.3.layer_scalar`) to its llama.cpp gemma4 GGUF name.
 */
export function gemma4GgufTensorName(hfName: string): string {
  const g = GLOBAL_NAMES[hfName];
  if (g) return g;
  const m = /^model\.layers\.(0|[1-9]\d*)\.(.+)$/.exec(hfName);
  if (m) {
    const suffix = LAYER_SUFFIX[m[2]!];
    if (suffix) return `blk.${m[1]}.${suffix}`;
  }
  throw new LutraError(`tensor "${hfName}": not a Gemma 4 text tensor that the GGUF mapping knows`);
}

/**
 * The inverse of gemma4GgufTensorName, or null for a name it does not produce. Null also for GGUF
 * tensors without a single HF counterpart: rope_freqs.weight (generated) and the split expert
 * halves ffn_gate_exps / ffn_up_exps (halves of experts.gate_up_proj).
 */
export function gemma4HfTensorName(gguf: string): string | null {
  const g = GGUF_GLOBAL.get(gguf);
  if (g) return g;
  const m = /^blk\.(0|[1-9]\d*)\.(.+)$/.exec(gguf);
  if (!m) return null;
  const suffix = GGUF_LAYER.get(m[2]!);
  return suffix ? `model.layers.${m[1]}.${suffix}` : null;
}

/**
 * The normalised HF names of every tensor a checkpoint of `cfg` needs: v_proj is absent on K = V
 * full layers, k_proj/v_proj/k_norm on KV-shared layers (HF ignores them there), lm_head when the
 * embeddings are tied.
 */
export function gemma4HfTensorNames(cfg: Gemma4Config): string[] {
  const names = ['model.embed_tokens.weight', 'model.norm.weight'];
  if (!cfg.tieWordEmbeddings) names.push('lm_head.weight');
  const ple = cfg.hiddenSizePerLayerInput > 0;
  if (ple) names.push('model.embed_tokens_per_layer.weight', 'model.per_layer_model_projection.weight', 'model.per_layer_projection_norm.weight');
  const ownKv = new Set(['self_attn.k_proj.weight', 'self_attn.v_proj.weight', 'self_attn.k_norm.weight']);
  const pleNames = new Set(['per_layer_input_gate.weight', 'per_layer_projection.weight', 'post_per_layer_input_norm.weight']);
  const moeNames = new Set([
    'router.proj.weight', 'router.scale', 'router.per_expert_scale', 'pre_feedforward_layernorm_2.weight',
    'post_feedforward_layernorm_1.weight', 'post_feedforward_layernorm_2.weight', 'experts.gate_up_proj', 'experts.down_proj',
  ]);
  cfg.layers.forEach((layer, i) => {
    for (const s of Object.keys(LAYER_SUFFIX)) {
      if (ownKv.has(s) && layer.kvSource !== i) continue;
      if (s === 'self_attn.v_proj.weight' && layer.kEqV) continue;
      if (pleNames.has(s) && !ple) continue;
      if (moeNames.has(s) && !cfg.enableMoeBlock) continue;
      names.push(`model.layers.${i}.${s}`);
    }
  });
  return names;
}

/** The PyTorch-order shape a Gemma 4 tensor must have under `cfg`. */
export function gemma4ExpectedShape(hfName: string, cfg: Gemma4Config): number[] {
  const H = cfg.hiddenSize;
  const L = cfg.numLayers;
  const P = cfg.hiddenSizePerLayerInput;
  switch (hfName) {
    case 'model.embed_tokens.weight':
    case 'lm_head.weight': return [cfg.vocabSize, H];
    case 'model.norm.weight': return [H];
    case 'model.embed_tokens_per_layer.weight': return [cfg.vocabSizePerLayerInput, L * P];
    case 'model.per_layer_model_projection.weight': return [L * P, H];
    case 'model.per_layer_projection_norm.weight': return [P];
  }
  const m = /^model\.layers\.(0|[1-9]\d*)\.(.+)$/.exec(hfName);
  if (!m || !LAYER_SUFFIX[m[2]!]) throw new LutraError(`tensor "${hfName}": not a Gemma 4 text tensor that the GGUF mapping knows`);
  const i = Number(m[1]);
  const layer = cfg.layers[i];
  if (!layer) throw new LutraError(`tensor "${hfName}": layer ${i} but the config has ${L} layers`);
  const Dl = layer.headDim;
  const q = cfg.numHeads * Dl;
  const kvd = layer.numKvHeads * Dl;
  const I = layer.intermediateSize;
  const E = cfg.numExperts ?? 0;
  const Ie = cfg.moeIntermediateSize ?? 0;
  switch (m[2]) {
    case 'self_attn.q_proj.weight': return [q, H];
    case 'self_attn.k_proj.weight':
    case 'self_attn.v_proj.weight': return [kvd, H];
    case 'self_attn.o_proj.weight': return [H, q];
    case 'self_attn.q_norm.weight':
    case 'self_attn.k_norm.weight': return [Dl];
    case 'mlp.gate_proj.weight':
    case 'mlp.up_proj.weight': return [I, H];
    case 'mlp.down_proj.weight': return [H, I];
    case 'layer_scalar': return [1];
    case 'per_layer_input_gate.weight': return [P, H];
    case 'per_layer_projection.weight': return [H, P];
    case 'router.proj.weight': return [E, H];
    case 'router.scale': return [H];
    case 'router.per_expert_scale': return [E];
    case 'experts.gate_up_proj': return [E, 2 * Ie, H];
    case 'experts.down_proj': return [E, H, Ie];
    default: return [H]; // the per-layer norms over the hidden state
  }
}

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
function shortestF32(x: number): number {
  for (let p = 1; p <= 9; p++) {
    const d = Number(x.toPrecision(p));
    if (Math.fround(d) === Math.fround(x)) return d;
  }
  return x;
}

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
