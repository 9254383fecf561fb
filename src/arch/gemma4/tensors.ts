// Gemma 4's tensor manifest: every tensor a text checkpoint holds, with the shape its config
// implies per layer (two head sizes, K=V full layers, KV-shared layers without K/V, double-wide
// MLPs, per-layer embeddings, the mixture-of-experts block), its quantization part and its
// llama.cpp name (merged expert layout).
import type { Gemma4Config } from '../config-types.js';
import type { TensorSpec } from '../architecture.js';
import type { WeightSource } from '../../model/forward.js';
import { ownsLmHead } from '../gemma3/tensors.js';
import { LutraError } from '../../util/errors.js';

/** Per-layer tensors: HF suffix → llama.cpp suffix. */
export const GEMMA4_LAYER_GGUF: Record<string, string> = {
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

export const GEMMA4_MODEL_GGUF: Record<string, string> = {
  'model.embed_tokens.weight': 'token_embd.weight',
  'lm_head.weight': 'output.weight',
  'model.norm.weight': 'output_norm.weight',
  'model.embed_tokens_per_layer.weight': 'per_layer_token_embd.weight',
  'model.per_layer_model_projection.weight': 'per_layer_model_proj.weight',
  'model.per_layer_projection_norm.weight': 'per_layer_proj_norm.weight',
};

/** The per-layer embedding table: read row by row from its file, never held in memory. */
export const PLE_TABLE = 'model.embed_tokens_per_layer.weight';

/** Every tensor Gemma 4 reads, in load order. */
export function gemma4Tensors(cfg: Gemma4Config, src: Pick<WeightSource, 'has' | 'separateLmHead'>): TensorSpec[] {
  const { vocabSize: V, hiddenSize: H, numHeads: nH, numLayers: L, hiddenSizePerLayerInput: P } = cfg;
  const hidden = `hidden_size = ${H}`;
  const out: TensorSpec[] = [];
  const model = (name: string, shape: number[], from: string, part: TensorSpec['part']) => out.push({ name, shape, from, part, gguf: GEMMA4_MODEL_GGUF[name]! });
  model('model.embed_tokens.weight', [V, H], `vocab_size = ${V}, ${hidden}`, 'embed');
  if (ownsLmHead(cfg, src)) model('lm_head.weight', [V, H], `vocab_size = ${V}, ${hidden}`, 'lmhead');
  if (P > 0) {
    const ple = `num_hidden_layers × hidden_size_per_layer_input = ${L} × ${P}`;
    model(PLE_TABLE, [cfg.vocabSizePerLayerInput, L * P], `vocab_size_per_layer_input = ${cfg.vocabSizePerLayerInput}, ${ple}`, 'ple');
    model('model.per_layer_model_projection.weight', [L * P, H], `${ple}, ${hidden}`, 'ple');
    model('model.per_layer_projection_norm.weight', [P], `hidden_size_per_layer_input = ${P}`, null);
  }
  cfg.layers.forEach((layer, l) => {
    const D = layer.headDim;
    const kind = layer.sliding ? 'head_dim' : 'global_head_dim';
    const kvHeads = !layer.sliding && cfg.attentionKEqV ? 'num_global_key_value_heads' : 'num_key_value_heads';
    const qDim = `num_attention_heads × ${kind} = ${nH} × ${D}`;
    const kvDim = `${kvHeads} × ${kind} = ${layer.numKvHeads} × ${D}`;
    const inter = `${layer.intermediateSize === cfg.intermediateSize ? 'intermediate_size' : '2 × intermediate_size (double-wide MLP on a KV-shared layer)'} = ${layer.intermediateSize}`;
    const t = (suffix: string, shape: number[], from: string, part: TensorSpec['part']) =>
      out.push({ name: `model.layers.${l}.${suffix}`, shape, from: `layer ${l} (${layer.sliding ? 'sliding' : 'full'}), ${from}`, part, gguf: `blk.${l}.${GEMMA4_LAYER_GGUF[suffix]}` });
    t('input_layernorm.weight', [H], hidden, null);
    t('self_attn.q_proj.weight', [nH * D, H], `${qDim}, ${hidden}`, 'attn');
    if (layer.kvSource === l) {
      t('self_attn.k_proj.weight', [layer.numKvHeads * D, H], `${kvDim}, ${hidden}`, 'attn');
      if (!layer.kEqV) t('self_attn.v_proj.weight', [layer.numKvHeads * D, H], `${kvDim}, ${hidden}`, 'attn');
      t('self_attn.k_norm.weight', [D], `${kind} = ${D}`, null);
    }
    t('self_attn.q_norm.weight', [D], `${kind} = ${D}`, null);
    t('self_attn.o_proj.weight', [H, nH * D], `${hidden}, ${qDim}`, 'attn');
    t('post_attention_layernorm.weight', [H], hidden, null);
    t('pre_feedforward_layernorm.weight', [H], hidden, null);
    t('mlp.gate_proj.weight', [layer.intermediateSize, H], `${inter}, ${hidden}`, 'ffn');
    t('mlp.up_proj.weight', [layer.intermediateSize, H], `${inter}, ${hidden}`, 'ffn');
    t('mlp.down_proj.weight', [H, layer.intermediateSize], `${hidden}, ${inter}`, 'ffn');
    t('post_feedforward_layernorm.weight', [H], hidden, null);
    if (cfg.enableMoeBlock) {
      const E = cfg.numExperts!;
      const Ie = cfg.moeIntermediateSize!;
      const experts = `num_experts = ${E}, moe_intermediate_size = ${Ie}, ${hidden}`;
      t('router.proj.weight', [E, H], `num_experts = ${E}, ${hidden}`, 'router');
      t('router.scale', [H], hidden, null);
      t('router.per_expert_scale', [E], `num_experts = ${E}`, null);
      t('pre_feedforward_layernorm_2.weight', [H], hidden, null);
      t('post_feedforward_layernorm_1.weight', [H], hidden, null);
      t('post_feedforward_layernorm_2.weight', [H], hidden, null);
      t('experts.gate_up_proj', [E, 2 * Ie, H], experts, 'experts');
      t('experts.down_proj', [E, H, Ie], experts, 'experts');
      out[out.length - 1].readPerToken = out[out.length - 2].readPerToken = cfg.topKExperts! / E;
    }
    if (P > 0) {
      t('per_layer_input_gate.weight', [P, H], `hidden_size_per_layer_input = ${P}, ${hidden}`, 'ple');
      t('per_layer_projection.weight', [H, P], `${hidden}, hidden_size_per_layer_input = ${P}`, 'ple');
      t('post_per_layer_input_norm.weight', [H], hidden, null);
    }
    t('layer_scalar', [1], 'one scalar per layer', null);
  });
  model('model.norm.weight', [H], hidden, null);
  return out;
}

const GGUF_GLOBAL = new Map(Object.entries(GEMMA4_MODEL_GGUF).map(([hf, g]) => [g, hf]));
const GGUF_LAYER = new Map(Object.entries(GEMMA4_LAYER_GGUF).map(([hf, g]) => [g, hf]));

/**
 * Maps a normalised HF tensor name (`model.` prefix, e.g. `model.layers.3.self_attn.q_proj.weight`,
 * `model.layers.3.layer_scalar`) to its llama.cpp gemma4 GGUF name.
 */
export function gemma4GgufTensorName(hfName: string): string {
  const g = GEMMA4_MODEL_GGUF[hfName];
  if (g) return g;
  const m = /^model\.layers\.(0|[1-9]\d*)\.(.+)$/.exec(hfName);
  if (m) {
    const suffix = GEMMA4_LAYER_GGUF[m[2]!];
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

