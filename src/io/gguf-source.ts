// A gemma3 GGUF file read as a WeightSource, so `lutra convert` (and anything else that opens
// sources) accepts it like a checkpoint. The config is rebuilt from the gemma3.* metadata as an
// HF-style config.json; names go back to HF's; norms go back from GGUF's 1 + w to HF's w.
// Q8_0 and Q4_0 tensors come back as int8:32 and int4:32 codes and scales, never dequantized, so
// package → GGUF → package is bit-exact (docs/FORMAT.md).
import { basename } from 'node:path';
import { LutraError } from '../util/errors.js';
import { resolveGemmaConfig, type GemmaConfig } from '../model/config.js';
import type { WeightSource } from '../model/gemma3.js';
import type { WeightFormat, WeightTensor } from '../model/weight.js';
import { decodeTensor, ggufNumber, ggufString, ggufTypeName, GgufType, readGguf, readTensorBytes, type GgufFile, type GgufTensorInfo } from './gguf.js';
import { gemma3HfTensorName } from './gguf-gemma3.js';
import { q4_0ToInt4, q8_0ToInt8 } from './gguf-blocks.js';
import { openRowReader, type RowLayout, type RowReader } from './row-reader.js';

const PLAIN: Record<number, WeightFormat> = {
  [GgufType.F32]: { kind: 'f32' },
  [GgufType.F16]: { kind: 'f16' },
  [GgufType.BF16]: { kind: 'bf16' },
  [GgufType.Q8_0]: { kind: 'int8', group: 32 },
  [GgufType.Q4_0]: { kind: 'int4', group: 32 },
};
/** Types decodeTensor can read (dequantized when not listed in PLAIN). */
const DECODABLE = new Set<number>([GgufType.F32, GgufType.F16, GgufType.BF16, GgufType.Q8_0, GgufType.Q4_0]);

export function isGgufPath(path: string): boolean {
  return path.toLowerCase().endsWith('.gguf');
}

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

/** An HF-style config.json (gemma3_text) from the gemma3.* metadata, for resolveGemmaConfig. */
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

export class GgufSource implements WeightSource {
  readonly kind = 'gguf' as const;
  readonly file: GgufFile;
  readonly config: GemmaConfig;
  readonly rawConfig: Record<string, unknown>;
  /** llama.cpp scales embeddings by sqrt(hidden) in f32, whatever the storage type. */
  readonly embedScale: number;
  /** output.weight, when present, is the head to use. */
  readonly separateLmHead = true;
  private byHf = new Map<string, GgufTensorInfo>();

  constructor(readonly dir: string) {
    this.file = readGguf(dir);
    // The architecture first: another model's tensors would otherwise be reported one by one.
    const arch = ggufString(this.file, 'general.architecture');
    if (arch !== 'gemma3') throw new LutraError(`${dir}: general.architecture is ${JSON.stringify(arch ?? null)}; lutra reads gemma3 GGUF files`);
    for (const t of this.file.tensors) {
      const hf = gemma3HfTensorName(t.name);
      if (hf === null) throw new LutraError(`${dir}: tensor "${t.name}" is not a Gemma 3 text tensor lutra knows`);
      this.checkType(t, hf);
      this.byHf.set(hf, t);
    }
    const embed = this.byHf.get('model.embed_tokens.weight');
    if (!embed) throw new LutraError(`${dir}: no token_embd.weight tensor`);
    this.rawConfig = gemma3ConfigFromGguf(this.file, embed.shape[0], this.byHf.has('lm_head.weight'));
    this.config = resolveGemmaConfig(this.rawConfig, `${dir} (gemma3.* metadata)`);
    this.embedScale = Math.fround(Math.sqrt(this.config.hiddenSize));
  }

  has(name: string): boolean {
    return this.byHf.has(name);
  }

  names(): string[] {
    return [...this.byHf.keys()];
  }

  private info(name: string): GgufTensorInfo {
    const t = this.byHf.get(name);
    if (!t) throw new LutraError(`${this.dir}: tensor "${name}" is missing from the GGUF file`);
    return t;
  }

  shape(name: string): number[] {
    return this.info(name).shape;
  }

  /** The GGUF name of an HF tensor name. */
  ggufName(name: string): string {
    return this.info(name).name;
  }

  /** The format load() returns: 1-D tensors are f32 (the −1 is applied in f32), matrices keep theirs. */
  format(name: string): WeightFormat {
    const t = this.info(name);
    this.checkType(t, name);
    if (t.shape.length === 1) return { kind: 'f32' };
    return PLAIN[t.type] ?? { kind: 'f32' };
  }

  private checkType(t: GgufTensorInfo, name: string): void {
    if (!DECODABLE.has(t.type)) {
      throw new LutraError(
        `${this.dir}: tensor "${t.name}" (${name}) has type ${ggufTypeName(t.type)}, which lutra cannot read; ` +
          'use a GGUF with F32, F16, BF16, Q8_0 or Q4_0 weights, or the Hugging Face checkpoint',
      );
    }
  }

  load(name: string, expected?: number[]): WeightTensor {
    const t = this.info(name);
    if (expected && (expected.length !== t.shape.length || expected.some((d, i) => d !== t.shape[i]))) {
      throw new LutraError(`${this.dir}: tensor "${t.name}" has shape [${t.shape}], expected [${expected}] from the metadata`);
    }
    const format = this.format(name);
    const base = { name, shape: t.shape, format, source: `${this.dir} (${t.name})` };
    if (t.shape.length === 1) {
      // GGUF stores Gemma norms as 1 + w; HF's w is recovered in f32 (exact for 1 + w in [0.5, 2]).
      const v = decodeTensor(this.file, t);
      if (name.endsWith('norm.weight')) for (let i = 0; i < v.length; i++) v[i] = Math.fround(v[i] - 1);
      return { ...base, data: new Uint8Array(v.buffer) };
    }
    const [rows, cols] = t.shape;
    const what = `${this.dir}: tensor "${t.name}"`;
    if (t.type === GgufType.Q8_0) {
      const q = q8_0ToInt8(readTensorBytes(this.file, t), rows, cols, what);
      return { ...base, data: q.codes, scales: q.scales };
    }
    if (t.type === GgufType.Q4_0) {
      const q = q4_0ToInt4(readTensorBytes(this.file, t), rows, cols, what);
      return { ...base, data: q.codes, scales: q.scales };
    }
    if (PLAIN[t.type]) return { ...base, data: readTensorBytes(this.file, t) };
    return { ...base, data: new Uint8Array(decodeTensor(this.file, t).buffer) };
  }

  /**
   * Rows of a 2-D tensor read from the file on demand (ggml's ne = [cols, rows]: a row is
   * contiguous, cols/32 blocks for Q8_0 / Q4_0). The reader has its own descriptor.
   */
  rowReader(name: string): RowReader {
    const t = this.info(name);
    if (t.shape.length !== 2) throw new LutraError(`${this.dir}: tensor "${t.name}" (${name}) has shape [${t.shape}]; reading rows needs a 2-D matrix`);
    this.checkType(t, name);
    const [rows, cols] = t.shape;
    const data = { path: this.dir, offset: t.offset, nbytes: t.nbytes };
    const layout: RowLayout =
      t.type === GgufType.Q8_0 ? { kind: 'ggml', type: 'q8_0', data }
      : t.type === GgufType.Q4_0 ? { kind: 'ggml', type: 'q4_0', data }
      : { kind: 'plain', dtype: t.type === GgufType.F16 ? 'f16' : t.type === GgufType.BF16 ? 'bf16' : 'f32', data };
    return openRowReader({ name, rows, cols, format: this.format(name), layout });
  }

  weightFiles(): string[] {
    return [this.dir];
  }

  /** general.name, else the file name. */
  modelName(): string {
    return ggufString(this.file, 'general.name') ?? basename(this.dir);
  }

  close(): void {}
}
