// Gemma 4's tensor manifest: every tensor the dense text model reads, with the shape its config
// implies per layer (two head sizes, K=V full layers, KV-shared layers without K/V, double-wide
// MLPs, per-layer embeddings), its quantization part and its llama.cpp name.
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
  'per_layer_input_gate.weight': 'inp_gate.weight',
  'per_layer_projection.weight': 'proj.weight',
  'post_per_layer_input_norm.weight': 'post_norm.weight',
  layer_scalar: 'layer_output_scale.weight',
};

export const GEMMA4_MODEL_GGUF: Record<string, string> = {
  'model.embed_tokens.weight': 'token_embd.weight',
  'model.norm.weight': 'output_norm.weight',
  'lm_head.weight': 'output.weight',
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

/** A GGUF tensor name back to its normalised HF name, or null when Gemma 4 has no such tensor. */
export function gemma4HfTensorName(ggufName: string): string | null {
  for (const [hf, g] of Object.entries(GEMMA4_MODEL_GGUF)) if (g === ggufName) return hf;
  const m = /^blk\.(\d+)\.(.+)$/.exec(ggufName);
  if (!m) return null;
  const suffix = Object.keys(GEMMA4_LAYER_GGUF).find((k) => GEMMA4_LAYER_GGUF[k] === m[2]);
  return suffix ? `model.layers.${Number(m[1])}.${suffix}` : null;
}

/** A normalised HF name to its GGUF name. */
export function gemma4GgufTensorName(hfName: string): string {
  const g = GEMMA4_MODEL_GGUF[hfName];
  if (g) return g;
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(hfName);
  const suffix = m ? GEMMA4_LAYER_GGUF[m[2]!] : undefined;
  if (!m || !suffix) throw new LutraError(`tensor "${hfName}": not a Gemma 4 text tensor that the GGUF exporter knows`);
  return `blk.${Number(m[1])}.${suffix}`;
}
