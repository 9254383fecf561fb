// Gemma 3 (text) -> GGUF exporter core, in the layout llama.cpp's `gemma3` architecture reads
// (llama.cpp's gemma3 loader): its tensor names and hparams, a SentencePiece-style
// ("llama") vocabulary rebuilt from tokenizer.json, and norm weights stored as 1 + w.
import type { GemmaConfig } from '../model/config.js';
import { LutraError } from '../util/errors.js';
import { f32ToBf16Bits, f32ToF16Bits } from '../util/half.js';
import { encodeQ4_0, encodeQ8_0, ggufTensorBytes, GgufType, kv, writeGguf } from './gguf.js';
import type { GgufMetadataEntry, GgufTensorSpec } from './gguf.js';
import { yieldToEvents } from '../util/atomic-output.js';
import { pieceRows, PIECE_WEIGHTS } from '../quant/pieces.js';

// ---------------------------------------------------------------------------------------------
// Tensor names

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
};

const GLOBAL_NAMES: Record<string, string> = {
  'model.embed_tokens.weight': 'token_embd.weight',
  'model.norm.weight': 'output_norm.weight',
  'lm_head.weight': 'output.weight',
};

/** Maps a normalised HF tensor name (`model.layers.3.self_attn.q_proj.weight`) to its GGUF name. */
export function gemma3GgufTensorName(hfName: string): string {
  const g = GLOBAL_NAMES[hfName];
  if (g) return g;
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(hfName);
  if (m) {
    const suffix = LAYER_SUFFIX[m[2]!];
    if (suffix) return `blk.${Number(m[1])}.${suffix}`;
  }
  throw new LutraError(`tensor "${hfName}": not a Gemma 3 text tensor that the GGUF exporter knows`);
}

/** Shape (PyTorch order) that a Gemma 3 tensor must have under `cfg`. */
export function gemma3ExpectedShape(hfName: string, cfg: GemmaConfig): number[] {
  const H = cfg.hiddenSize;
  const D = cfg.headDim;
  const q = cfg.numHeads * D;
  const kvd = cfg.numKvHeads * D;
  const I = cfg.intermediateSize;
  if (hfName === 'model.embed_tokens.weight' || hfName === 'lm_head.weight') return [cfg.vocabSize, H];
  if (hfName === 'model.norm.weight') return [H];
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(hfName);
  if (!m || !LAYER_SUFFIX[m[2]!]) throw new LutraError(`tensor "${hfName}": not a Gemma 3 text tensor that the GGUF exporter knows`);
  const layer = Number(m[1]);
  if (layer >= cfg.numLayers) throw new LutraError(`tensor "${hfName}": layer ${layer} but the config has ${cfg.numLayers} layers`);
  switch (m[2]) {
    case 'self_attn.q_proj.weight': return [q, H];
    case 'self_attn.k_proj.weight':
    case 'self_attn.v_proj.weight': return [kvd, H];
    case 'self_attn.o_proj.weight': return [H, q];
    case 'self_attn.q_norm.weight':
    case 'self_attn.k_norm.weight': return [D];
    case 'mlp.gate_proj.weight':
    case 'mlp.up_proj.weight': return [I, H];
    case 'mlp.down_proj.weight': return [H, I];
    default: return [H]; // the four per-layer norms
  }
}

/** The inverse of gemma3GgufTensorName: a GGUF tensor name back to its normalised HF name, or null. */
export function gemma3HfTensorName(ggufName: string): string | null {
  for (const [hf, g] of Object.entries(GLOBAL_NAMES)) if (g === ggufName) return hf;
  const m = /^blk\.(\d+)\.(.+)$/.exec(ggufName);
  if (!m) return null;
  const suffix = Object.keys(LAYER_SUFFIX).find((k) => LAYER_SUFFIX[k] === m[2]);
  return suffix ? `model.layers.${Number(m[1])}.${suffix}` : null;
}

function requiredHfNames(cfg: GemmaConfig): string[] {
  const names = ['model.embed_tokens.weight', 'model.norm.weight'];
  for (let i = 0; i < cfg.numLayers; i++) for (const s of Object.keys(LAYER_SUFFIX)) names.push(`model.layers.${i}.${s}`);
  return names;
}

// ---------------------------------------------------------------------------------------------
// Vocabulary

/** llama.cpp token types (llama.h `llama_token_type`). */
export const TokenType = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

export interface GgufVocab {
  tokens: string[];
  scores: Float32Array;
  types: Int32Array;
  /** token text -> id */
  ids: Map<string, number>;
}

const BYTE_PIECE = /^<0x[0-9A-Fa-f]{2}>$/;

/**
 * Rebuilds a SentencePiece-style vocabulary of exactly `vocabSize` entries from an HF
 * tokenizer.json (BPE with a {piece: id} vocab, or Unigram with [[piece, score], ...]) plus its
 * added_tokens. Ids the tokenizer does not define, and ids past its end, become `[PAD{id}]`
 * (type UNUSED, score -1000 as in convert_hf_to_gguf.py); a longer tokenizer is truncated.
 *
 * Scores: Gemma's tokenizer.json has BPE merges but no SentencePiece scores. SentencePiece BPE
 * scores each piece by creation order (score = -rank) and numbers pieces in that order, so for
 * normal pieces score = -id reproduces the merge priority llama.cpp's SPM tokenizer uses. Control,
 * user-defined, unknown and byte pieces get 0, as SentencePiece gives them (llama.cpp matches
 * user-defined/control tokens as whole strings, so their score does not matter).
 *
 * Types: 6 byte for `<0xXX>` pieces, 3 control for added tokens with special=true, 4 user-defined
 * for added tokens with special=false, 2 unknown for model.unk_token, 1 normal otherwise.
 */
export function gemma3GgufVocab(tokenizerJson: any, vocabSize: number): GgufVocab {
  const model = tokenizerJson?.model;
  if (!model || typeof model !== 'object') throw new LutraError('tokenizer.json: missing "model" object');
  const tokens: (string | undefined)[] = new Array(vocabSize);
  const scores = new Float32Array(vocabSize);
  const types = new Int32Array(vocabSize);
  const put = (id: number, piece: string, score: number, type: number): void => {
    if (!Number.isInteger(id) || id < 0) throw new LutraError(`tokenizer.json: invalid token id ${id} for ${JSON.stringify(piece)}`);
    if (id >= vocabSize) return; // truncated to the embedding size
    tokens[id] = piece;
    scores[id] = score;
    types[id] = type;
  };

  const vocab = model.vocab;
  if (Array.isArray(vocab)) {
    // Unigram: [[piece, score], ...] in id order.
    vocab.forEach((e: unknown, id: number) => {
      if (!Array.isArray(e) || typeof e[0] !== 'string') throw new LutraError(`tokenizer.json: model.vocab[${id}] is not [piece, score]`);
      const byte = BYTE_PIECE.test(e[0]);
      put(id, e[0], byte ? 0 : Number(e[1] ?? 0), byte ? TokenType.BYTE : TokenType.NORMAL);
    });
  } else if (vocab && typeof vocab === 'object') {
    for (const [piece, id] of Object.entries(vocab as Record<string, number>)) {
      if (typeof id !== 'number') throw new LutraError(`tokenizer.json: model.vocab[${JSON.stringify(piece)}] is not a number`);
      const byte = BYTE_PIECE.test(piece);
      put(id, piece, byte ? 0 : -id, byte ? TokenType.BYTE : TokenType.NORMAL);
    }
  } else {
    throw new LutraError('tokenizer.json: model.vocab is neither an object nor an array');
  }

  const added = tokenizerJson.added_tokens ?? [];
  if (!Array.isArray(added)) throw new LutraError('tokenizer.json: "added_tokens" is not an array');
  for (const t of added) {
    if (typeof t?.content !== 'string' || typeof t?.id !== 'number') throw new LutraError(`tokenizer.json: malformed added token ${JSON.stringify(t)}`);
    put(t.id, t.content, 0, t.special ? TokenType.CONTROL : TokenType.USER_DEFINED);
  }

  const unk = typeof model.unk_token === 'string' ? model.unk_token : undefined;
  const out: string[] = new Array(vocabSize);
  const ids = new Map<string, number>();
  for (let id = 0; id < vocabSize; id++) {
    let piece = tokens[id];
    if (piece === undefined || piece === '') {
      piece = `[PAD${id}]`;
      scores[id] = -1000;
      types[id] = TokenType.UNUSED;
    } else if (piece === unk) {
      types[id] = TokenType.UNKNOWN;
      scores[id] = 0;
    }
    const prev = ids.get(piece);
    if (prev !== undefined) {
      // llama.cpp asserts that token strings are unique.
      throw new LutraError(`tokenizer.json: token ${JSON.stringify(piece)} appears with ids ${prev} and ${id}; GGUF vocabularies need unique pieces`);
    }
    ids.set(piece, id);
    out[id] = piece;
  }
  return { tokens: out, scores, types, ids };
}

function specialTokenText(tokenizerConfig: any, field: string): string | undefined {
  const v = tokenizerConfig?.[field];
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof v.content === 'string') return v.content;
  return undefined;
}

function chatTemplate(tokenizerConfig: any): string | undefined {
  const t = tokenizerConfig?.chat_template;
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) {
    const d = t.find((x: any) => x?.name === 'default') ?? t[0];
    if (typeof d?.template === 'string') return d.template;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Metadata

export type Gemma3GgufType = 'f32' | 'f16' | 'q8_0' | 'q4_0';

/** llama_ftype values for general.file_type. */
const FILE_TYPE: Record<Gemma3GgufType, number> = { f32: 0, f16: 1, q8_0: 7, q4_0: 2 };

/** The ggml type of the 2-D weights for an export type. */
const MATRIX_TYPE: Record<Gemma3GgufType, GgufType> = { f32: GgufType.F32, f16: GgufType.F16, q8_0: GgufType.Q8_0, q4_0: GgufType.Q4_0 };

/**
 * GGUF metadata for a Gemma 3 text model: general.*, gemma3.* hparams and the tokenizer.
 *
 * Besides the keys convert_hf_to_gguf.py writes, two keys make llama.cpp follow the config
 * instead of its gemma3 hard-coding (read by the llama.cpp in node-llama-cpp 3.22.1, ignored by
 * older builds): `gemma3.rope.freq_base_swa` (local θ) and `gemma3.attention.sliding_window_pattern`
 * (per-layer bool, true = sliding), taken from cfg.layerTypes.
 *
 * Special ids follow convert_hf_to_gguf's SpecialVocab: tokenizer_config.json's bos/eos/unk/pad
 * token strings resolved to ids first, then config.json ids (cfg) as fallback.
 */
export function gemma3GgufMetadata(
  cfg: GemmaConfig,
  tokenizerJson: any,
  tokenizerConfig: any,
  name: string,
  opts: { fileType?: Gemma3GgufType } = {},
): GgufMetadataEntry[] {
  const A = 'gemma3';
  const sliding = cfg.layerTypes.map((t) => t === 'sliding_attention');
  const m: GgufMetadataEntry[] = [
    kv.str('general.architecture', A),
    kv.str('general.name', name),
    kv.u32('general.file_type', FILE_TYPE[opts.fileType ?? 'f32']),
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

  const vocab = gemma3GgufVocab(tokenizerJson, cfg.vocabSize);
  const idOf = (field: string, fallback: number | undefined): number | undefined => {
    const text = specialTokenText(tokenizerConfig, field);
    const id = text !== undefined ? vocab.ids.get(text) : undefined;
    const r = id ?? fallback;
    if (r !== undefined && (r < 0 || r >= cfg.vocabSize)) {
      throw new LutraError(`${field} id ${r} is outside the vocabulary of ${cfg.vocabSize} tokens`);
    }
    return r;
  };
  const unkText = typeof tokenizerJson?.model?.unk_token === 'string' ? tokenizerJson.model.unk_token : undefined;
  const bos = idOf('bos_token', cfg.bosTokenId);
  const eos = idOf('eos_token', cfg.eosTokenIds[0]);
  const unk = idOf('unk_token', unkText !== undefined ? vocab.ids.get(unkText) : undefined);
  const pad = idOf('pad_token', cfg.padTokenId);

  m.push(
    kv.str('tokenizer.ggml.model', 'llama'),
    kv.str('tokenizer.ggml.pre', 'default'),
    kv.arr.str('tokenizer.ggml.tokens', vocab.tokens),
    kv.arr.f32('tokenizer.ggml.scores', vocab.scores),
    kv.arr.i32('tokenizer.ggml.token_type', vocab.types),
  );
  if (bos !== undefined) m.push(kv.u32('tokenizer.ggml.bos_token_id', bos));
  if (eos !== undefined) m.push(kv.u32('tokenizer.ggml.eos_token_id', eos));
  if (unk !== undefined) m.push(kv.u32('tokenizer.ggml.unknown_token_id', unk));
  if (pad !== undefined) m.push(kv.u32('tokenizer.ggml.padding_token_id', pad));
  const addBos = tokenizerConfig?.add_bos_token;
  const addEos = tokenizerConfig?.add_eos_token;
  m.push(
    kv.bool('tokenizer.ggml.add_bos_token', typeof addBos === 'boolean' ? addBos : true),
    kv.bool('tokenizer.ggml.add_eos_token', typeof addEos === 'boolean' ? addEos : false),
    kv.bool('tokenizer.ggml.add_space_prefix', false),
  );
  const tpl = chatTemplate(tokenizerConfig);
  if (tpl !== undefined) m.push(kv.str('tokenizer.chat_template', tpl));
  return m;
}

/**
 * Where llama.cpp's gemma3 graph will not follow `cfg` (it hard-codes these), so an oracle
 * comparison against lutra must avoid them. Empty when llama.cpp and HF agree.
 */
export function gemma3LlamaCppDifferences(cfg: GemmaConfig): string[] {
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

// ---------------------------------------------------------------------------------------------
// Exporter

export interface Gemma3ExportTensor {
  /** Normalised HF name, e.g. `model.layers.0.self_attn.q_proj.weight`. */
  hfName: string;
  shape: number[];
  /** Called once, when the tensor is written. */
  load: () => Float32Array | Promise<Float32Array>;
  /**
   * The tensor already encoded in ggml `type`, when the source stores exactly that (a package's
   * int8:32 for Q8_0, int4:32 for Q4_0): written as is, bit-exact. Undefined: load() and encode.
   */
  exact?: (type: GgufType) => Uint8Array | undefined;
}

export interface Gemma3ExportOptions {
  out: string;
  cfg: GemmaConfig;
  tokenizerJson: any;
  tokenizerConfig: any;
  name: string;
  /** Type of the 2-D weights; 1-D norm weights are always F32. */
  type: Gemma3GgufType;
  /**
   * Write lm_head.weight (as output.weight) even though the config ties it to the embedding: a
   * package stores a separate head when its format differs from the embedding's.
   */
  separateLmHead?: boolean;
  tensors: Gemma3ExportTensor[];
  /** Bytes of tensor data written so far / in total. */
  onProgress?: (done: number, total: number) => void;
  /** Replace an existing `out` (the default); false refuses one, naming `flag`. */
  force?: boolean;
  flag?: string;
}

/**
 * Writes a llama.cpp-loadable gemma3 GGUF. Norm weights (HF names ending in `norm.weight`) are
 * stored as 1 + w computed in float32 (as HF applies them); lm_head is omitted when the
 * embeddings are tied (llama.cpp then reuses token_embd) unless opts.separateLmHead.
 */
export async function exportGemma3Gguf(opts: Gemma3ExportOptions): Promise<void> {
  const { cfg } = opts;
  if (!Object.hasOwn(FILE_TYPE, opts.type)) throw new LutraError(`GGUF export: unsupported type "${String(opts.type)}" (use f32, f16, q8_0 or q4_0)`);
  const seen = new Set<string>();
  const specs: GgufTensorSpec[] = [];
  for (const t of opts.tensors) {
    if (seen.has(t.hfName)) throw new LutraError(`tensor "${t.hfName}": given twice`);
    seen.add(t.hfName);
    if (t.hfName === 'lm_head.weight' && cfg.tieWordEmbeddings && !opts.separateLmHead) continue;
    const ggufName = gemma3GgufTensorName(t.hfName);
    const expected = gemma3ExpectedShape(t.hfName, cfg);
    if (t.shape.length !== expected.length || t.shape.some((d, i) => d !== expected[i])) {
      throw new LutraError(`tensor "${t.hfName}": shape [${t.shape.join(', ')}] but the config implies [${expected.join(', ')}]`);
    }
    const isNorm = t.hfName.endsWith('norm.weight');
    const type = t.shape.length === 1 ? GgufType.F32 : MATRIX_TYPE[opts.type];
    const nbytes = ggufTensorBytes(type, t.shape, `tensor "${t.hfName}"`);
    const numel = t.shape.reduce((a, b) => a * b, 1);
    specs.push({
      name: ggufName,
      shape: t.shape,
      type,
      nbytes,
      data: async () => {
        const exact = isNorm ? undefined : t.exact?.(type);
        if (exact) {
          if (exact.byteLength !== nbytes) throw new LutraError(`tensor "${t.hfName}": ${exact.byteLength} encoded bytes, expected ${nbytes}`);
          return exact;
        }
        const src = await t.load();
        if (src.length !== numel) throw new LutraError(`tensor "${t.hfName}": loaded ${src.length} values, expected ${numel}`);
        let f = src;
        if (isNorm) {
          f = new Float32Array(src.length);
          for (let i = 0; i < src.length; i++) f[i] = src[i]! + 1; // rounded to f32 on store
        }
        return encodeInPieces(f, t.shape, type, nbytes, t.hfName);
      },
    });
  }
  const missing = requiredHfNames(cfg).filter((n) => !seen.has(n));
  if (missing.length > 0) {
    throw new LutraError(`GGUF export: missing ${missing.length} tensor(s), e.g. "${missing.slice(0, 3).join('", "')}"`);
  }
  if (!cfg.tieWordEmbeddings && !seen.has('lm_head.weight')) {
    throw new LutraError('GGUF export: tie_word_embeddings is false but there is no lm_head.weight');
  }
  const metadata = gemma3GgufMetadata(cfg, opts.tokenizerJson, opts.tokenizerConfig, opts.name, { fileType: opts.type });
  await writeGguf(opts.out, metadata, specs, { onProgress: opts.onProgress, force: opts.force, flag: opts.flag });
}

/** encode() a piece of whole rows at a time (rows encode independently), yielding in between so a signal is handled. */
async function encodeInPieces(f: Float32Array, shape: number[], type: number, nbytes: number, hfName: string): Promise<Uint8Array> {
  const cols = shape[shape.length - 1]!;
  const rows = f.length / cols;
  if (f.length <= PIECE_WEIGHTS || type === GgufType.F32) return encode(f, type, hfName);
  const out = new Uint8Array(nbytes);
  const rowBytes = nbytes / rows;
  const step = pieceRows(cols);
  for (let r0 = 0; r0 < rows; r0 += step) {
    const n = Math.min(step, rows - r0);
    out.set(encode(f.subarray(r0 * cols, (r0 + n) * cols), type, hfName, r0 * cols), r0 * rowBytes);
    await yieldToEvents();
  }
  return out;
}

/** `at`: index of f[0] in the whole tensor, for error messages. */
function encode(f: Float32Array, type: number, hfName: string, at = 0): Uint8Array {
  if (type === GgufType.F32) return new Uint8Array(f.buffer, f.byteOffset, f.byteLength);
  if (type === GgufType.Q8_0) return encodeQ8_0(f);
  if (type === GgufType.Q4_0) return encodeQ4_0(f);
  const h = new Uint16Array(f.length);
  for (let i = 0; i < f.length; i++) {
    const b = f32ToF16Bits(f[i]!);
    if ((b & 0x7c00) === 0x7c00 && Number.isFinite(f[i]!)) {
      throw new LutraError(`tensor "${hfName}": value ${f[i]} at index ${at + i} overflows f16; export as f32`);
    }
    h[i] = b;
  }
  return new Uint8Array(h.buffer);
}
