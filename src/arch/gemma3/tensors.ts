// Gemma 3's tensor manifest: every tensor the model reads, with the shape config.json implies, its
// quantization part and its llama.cpp name. Loader, shape checks, quantizer, bench, inspect and the
// GGUF mapping all read this one list.
import type { Gemma3Config } from '../config-types.js';
import type { TensorSpec } from '../architecture.js';
import type { WeightSource } from '../../model/forward.js';
import { LutraError } from '../../util/errors.js';

/** Per-layer tensors: HF suffix → llama.cpp suffix. */
export const GEMMA3_LAYER_GGUF: Record<string, string> = {
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
};

export const GEMMA3_MODEL_GGUF: Record<string, string> = {
  'model.embed_tokens.weight': 'token_embd.weight',
  'model.norm.weight': 'output_norm.weight',
  'lm_head.weight': 'output.weight',
};

/** Whether the model reads its own lm_head.weight instead of the tied embedding. */
export function ownsLmHead(cfg: { tieWordEmbeddings: boolean }, src: Pick<WeightSource, 'has' | 'separateLmHead'>): boolean {
  return src.has('lm_head.weight') && (!cfg.tieWordEmbeddings || src.separateLmHead === true);
}

/** Every tensor Gemma 3 reads, in load order. */
export function gemma3Tensors(cfg: Gemma3Config, src: Pick<WeightSource, 'has' | 'separateLmHead'>): TensorSpec[] {
  const { vocabSize: V, hiddenSize: H, intermediateSize: I, numHeads: nH, numKvHeads: nKV, headDim: D } = cfg;
  const hidden = `hidden_size = ${H}`;
  const vocab = `vocab_size = ${V}`;
  const inter = `intermediate_size = ${I}`;
  const qDim = `num_attention_heads × head_dim = ${nH} × ${D}`;
  const kvDim = `num_key_value_heads × head_dim = ${nKV} × ${D}`;
  const out: TensorSpec[] = [];
  const model = (name: string, shape: number[], from: string, part: TensorSpec['part']) => out.push({ name, shape, from, part, gguf: GEMMA3_MODEL_GGUF[name]! });
  model('model.embed_tokens.weight', [V, H], `${vocab}, ${hidden}`, 'embed');
  if (ownsLmHead(cfg, src)) model('lm_head.weight', [V, H], `${vocab}, ${hidden}`, 'lmhead');
  for (let l = 0; l < cfg.numLayers; l++) {
    const layer = `num_hidden_layers = ${cfg.numLayers}`;
    const t = (suffix: string, shape: number[], from: string, part: TensorSpec['part']) =>
      out.push({ name: `model.layers.${l}.${suffix}`, shape, from: `${layer}, ${from}`, part, gguf: `blk.${l}.${GEMMA3_LAYER_GGUF[suffix]}` });
    t('input_layernorm.weight', [H], hidden, null);
    t('self_attn.q_proj.weight', [nH * D, H], `${qDim}, ${hidden}`, 'attn');
    t('self_attn.k_proj.weight', [nKV * D, H], `${kvDim}, ${hidden}`, 'attn');
    t('self_attn.v_proj.weight', [nKV * D, H], `${kvDim}, ${hidden}`, 'attn');
    t('self_attn.o_proj.weight', [H, nH * D], `${hidden}, ${qDim}`, 'attn');
    t('self_attn.q_norm.weight', [D], `head_dim = ${D}`, null);
    t('self_attn.k_norm.weight', [D], `head_dim = ${D}`, null);
    t('post_attention_layernorm.weight', [H], hidden, null);
    t('pre_feedforward_layernorm.weight', [H], hidden, null);
    t('mlp.gate_proj.weight', [I, H], `${inter}, ${hidden}`, 'ffn');
    t('mlp.up_proj.weight', [I, H], `${inter}, ${hidden}`, 'ffn');
    t('mlp.down_proj.weight', [H, I], `${hidden}, ${inter}`, 'ffn');
    t('post_feedforward_layernorm.weight', [H], hidden, null);
  }
  model('model.norm.weight', [H], hidden, null);
  return out;
}

/** A GGUF tensor name back to its normalised HF name, or null when Gemma 3 has no such tensor. */
export function gemma3HfTensorName(ggufName: string): string | null {
  for (const [hf, g] of Object.entries(GEMMA3_MODEL_GGUF)) if (g === ggufName) return hf;
  const m = /^blk\.(\d+)\.(.+)$/.exec(ggufName);
  if (!m) return null;
  const suffix = Object.keys(GEMMA3_LAYER_GGUF).find((k) => GEMMA3_LAYER_GGUF[k] === m[2]);
  return suffix ? `model.layers.${Number(m[1])}.${suffix}` : null;
}

/** A normalised HF name to its GGUF name (the inverse of gemma3HfTensorName). */
export function gemma3GgufTensorName(hfName: string): string {
  const g = GEMMA3_MODEL_GGUF[hfName];
  if (g) return g;
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(hfName);
  const suffix = m ? GEMMA3_LAYER_GGUF[m[2]!] : undefined;
  if (!m || !suffix) throw new LutraError(`tensor "${hfName}": not a Gemma 3 text tensor that the GGUF exporter knows`);
  return `blk.${Number(m[1])}.${suffix}`;
}
