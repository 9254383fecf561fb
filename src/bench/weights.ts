// Weight bytes a decode step reads, from the formats of the weights the model actually loaded
// (not the file size: a file may hold extra tensors, and packages store scales differently).
import { openWeightSource } from '../io/source.js';
import type { Gemma3Model } from '../model/gemma3.js';
import { formatName, rowBytes, scaleCount, type WeightFormat } from '../model/weight.js';

/** Bytes of one [rows, cols] matrix as the backends hold it: codes plus f32 scales or tables. */
export function matrixBytes(format: WeightFormat, rows: number, cols: number): number {
  let bytes = rows * rowBytes(format, cols);
  bytes += 4 * scaleCount(format, rows, cols);
  if (format.kind === 'lut') bytes += 4 * (format.group === 0 ? 1 : Math.ceil(rows / format.group)) * 2 ** format.bits;
  return bytes;
}

export interface WeightBytes {
  /** Bytes read per decoded token: every matrix once (a tied embedding once, as the LM head) plus the f32 norm gains. */
  perToken: number;
  /** Every weight held in memory (adds the embedding when the LM head is separate). */
  resident: number;
  /** Matrix bytes by format name, e.g. { 'int4:32': ..., f16: ... } (embedding/LM head included). */
  byFormat: Record<string, number>;
  /** Matrix name → format name, for export decisions. */
  formats: Map<string, string>;
}

const LAYER_MATRICES = ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj'];
const LAYER_NORMS = ['input_layernorm', 'self_attn.q_norm', 'self_attn.k_norm', 'post_attention_layernorm', 'pre_feedforward_layernorm', 'post_feedforward_layernorm'];

/** `dir` is the folder/file `model` was loaded from (its formats are read from the header only). */
export function weightBytes(dir: string, model: Gemma3Model): WeightBytes {
  const src = openWeightSource(dir);
  try {
    const byFormat: Record<string, number> = {};
    const formats = new Map<string, string>();
    const mat = (name: string): number => {
      const [rows, cols] = src.shape(name);
      const f = src.format(name);
      const b = matrixBytes(f, rows, cols);
      const fname = formatName(f);
      byFormat[fname] = (byFormat[fname] ?? 0) + b;
      formats.set(name, fname);
      return b;
    };
    const norm = (name: string) => 4 * src.shape(name)[0]; // gains are expanded to f32 at load
    const embed = mat('model.embed_tokens.weight');
    const separateHead = model.lmHead !== model.embed;
    const head = separateHead ? mat('lm_head.weight') : embed;
    let layers = 0;
    for (let l = 0; l < model.layers.length; l++) {
      const p = `model.layers.${l}.`;
      for (const m of LAYER_MATRICES) layers += mat(`${p}${m}.weight`);
      for (const n of LAYER_NORMS) layers += norm(`${p}${n}.weight`);
    }
    layers += norm('model.norm.weight');
    return { perToken: head + layers, resident: layers + embed + (separateHead ? head : 0), byFormat, formats };
  } finally {
    src.close();
  }
}
