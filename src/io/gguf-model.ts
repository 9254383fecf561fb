// Model -> GGUF exporter core, in the layout llama.cpp reads for the model's architecture: tensor
// names, shapes and hparams from the architecture module (src/arch/), a SentencePiece-style
// ("llama") vocabulary rebuilt from tokenizer.json, and norm weights as the architecture stores them.
import type { ModelConfig } from '../arch/config-types.js';
import type { Architecture } from '../arch/architecture.js';
import { LutraError } from '../util/errors.js';
import { f32ToF16Bits } from '../util/half.js';
import { encodeQ4_0, encodeQ8_0, ggufTensorBytes, GgufType, kv, writeGguf } from './gguf.js';
import type { GgufMetadataEntry, GgufTensorSpec } from './gguf.js';
import { yieldToEvents } from '../util/atomic-output.js';
import { pieceRows, PIECE_WEIGHTS, STREAM_WEIGHTS } from '../quant/pieces.js';

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
export function ggufVocab(tokenizerJson: any, vocabSize: number): GgufVocab {
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

export type GgufExportType = 'f32' | 'f16' | 'q8_0' | 'q4_0';

/** llama_ftype values for general.file_type. */
export const FILE_TYPE: Record<GgufExportType, number> = { f32: 0, f16: 1, q8_0: 7, q4_0: 2 };

/** The ggml type of the 2-D weights for an export type. */
export const MATRIX_TYPE: Record<GgufExportType, GgufType> = { f32: GgufType.F32, f16: GgufType.F16, q8_0: GgufType.Q8_0, q4_0: GgufType.Q4_0 };
export const EXPORT_TYPES = Object.keys(MATRIX_TYPE) as GgufExportType[];

/**
 * Tokenizer keys: tokenizer.json's vocabulary as a SentencePiece-style ("llama") vocabulary, which
 * llama.cpp reads for both gemma3 and gemma4. Special ids follow convert_hf_to_gguf's
 * SpecialVocab: tokenizer_config.json's bos/eos/unk/pad token strings resolved to ids first, then
 * config.json ids (cfg) as fallback.
 */
export function tokenizerGgufMetadata(cfg: ModelConfig, tokenizerJson: any, tokenizerConfig: any): GgufMetadataEntry[] {
  const m: GgufMetadataEntry[] = [];
  const vocab = ggufVocab(tokenizerJson, cfg.vocabSize);
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

// ---------------------------------------------------------------------------------------------
// Exporter

export interface ExportTensor {
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
  /** The rows as f32, a piece of whole rows at a time: used instead of load() for a tensor too large to hold whole. */
  pieces?: () => AsyncIterable<Float32Array>;
}

export interface ModelExportOptions {
  out: string;
  arch: Architecture;
  cfg: ModelConfig;
  tokenizerJson: any;
  tokenizerConfig: any;
  name: string;
  /** Type of the matrices; 1-D tensors and routers are always F32. */
  type: GgufExportType;
  /**
   * Write lm_head.weight (as output.weight) even though the config ties it to the embedding: a
   * package stores a separate head when its format differs from the embedding's.
   */
  separateLmHead?: boolean;
  tensors: ExportTensor[];
  /** Bytes of tensor data written so far / in total. */
  onProgress?: (done: number, total: number) => void;
  /** Replace an existing `out` (the default); false refuses one, naming `flag`. */
  force?: boolean;
  flag?: string;
  /** Tensors with more weights are written a piece of rows at a time when they can be (default STREAM_WEIGHTS; tests lower it). */
  streamWeights?: number;
}

/**
 * Writes a llama.cpp-loadable GGUF of the architecture's manifest: every tensor it lists, under its
 * GGUF name, checked against the shape the config implies. Norm gains (1-D tensors named
 * `*norm.weight`) are stored as 1 + w computed in float32 when the architecture keeps them that
 * way in GGUF (Gemma 3); lm_head is written only when the model reads one.
 */
export async function exportModelGguf(opts: ModelExportOptions): Promise<void> {
  const { cfg, arch } = opts;
  const streamWeights = opts.streamWeights ?? STREAM_WEIGHTS;
  if (!Object.hasOwn(FILE_TYPE, opts.type)) throw new LutraError(`GGUF export: unsupported type "${String(opts.type)}" (use f32, f16, q8_0 or q4_0)`);
  const problem = arch.gguf.exportProblem?.(cfg);
  if (problem) throw new LutraError(`GGUF export: llama.cpp's ${arch.gguf.arch} cannot run this model: ${problem}`);
  const given = new Map<string, ExportTensor>();
  for (const t of opts.tensors) {
    if (given.has(t.hfName)) throw new LutraError(`tensor "${t.hfName}": given twice`);
    given.set(t.hfName, t);
  }
  if (!cfg.tieWordEmbeddings && !given.has('lm_head.weight')) {
    throw new LutraError('GGUF export: tie_word_embeddings is false but there is no lm_head.weight');
  }
  const manifest = arch.tensors(cfg, { has: (n) => given.has(n), separateLmHead: opts.separateLmHead });
  const missing = manifest.filter((m) => !given.has(m.name)).map((m) => m.name);
  if (missing.length > 0) {
    throw new LutraError(`GGUF export: missing ${missing.length} tensor(s), e.g. "${missing.slice(0, 3).join('", "')}"`);
  }
  const known = new Set(manifest.map((m) => m.name));
  for (const name of given.keys()) {
    if (!known.has(name) && name !== 'lm_head.weight') throw new LutraError(`tensor "${name}": not a ${arch.name} tensor that the GGUF exporter knows`);
  }
  const specs: GgufTensorSpec[] = [];
  for (const m of manifest) {
    const t = given.get(m.name)!;
    if (t.shape.length !== m.shape.length || t.shape.some((d, i) => d !== m.shape[i])) {
      throw new LutraError(`tensor "${t.hfName}": shape [${t.shape.join(', ')}] but the config implies [${m.shape.join(', ')}] (${m.from})`);
    }
    const plusOne = arch.gguf.normsStoredPlusOne && t.shape.length === 1 && t.hfName.endsWith('norm.weight');
    // A router stays F32 (its values exactly, whatever lutra format holds them), as llama.cpp's
    // quantizer keeps ffn_gate_inp: it picks the experts (see the router part in architecture.ts).
    const type = t.shape.length === 1 || m.part === 'router' ? GgufType.F32 : MATRIX_TYPE[opts.type];
    const nbytes = ggufTensorBytes(type, t.shape, `tensor "${t.hfName}"`);
    const numel = t.shape.reduce((a, b) => a * b, 1);
    specs.push({
      name: m.gguf,
      shape: t.shape,
      type,
      nbytes,
      data: async () => {
        const exact = t.shape.length === 1 ? undefined : t.exact?.(type);
        if (exact) {
          if (exact.byteLength !== nbytes) throw new LutraError(`tensor "${t.hfName}": ${exact.byteLength} encoded bytes, expected ${nbytes}`);
          return exact;
        }
        if (t.pieces && numel > streamWeights) return encodePieces(t.pieces(), type, t.hfName);
        const src = await t.load();
        if (src.length !== numel) throw new LutraError(`tensor "${t.hfName}": loaded ${src.length} values, expected ${numel}`);
        let f = src;
        if (plusOne) {
          f = new Float32Array(src.length);
          for (let i = 0; i < src.length; i++) f[i] = src[i]! + 1; // rounded to f32 on store
        }
        return encodeInPieces(f, t.shape, type, nbytes, t.hfName);
      },
    });
  }
  for (const x of arch.gguf.extraTensors?.(cfg) ?? []) {
    specs.push({ name: x.gguf, shape: [x.data.length], type: GgufType.F32, nbytes: x.data.byteLength, data: async () => new Uint8Array(x.data.buffer, x.data.byteOffset, x.data.byteLength) });
  }
  const metadata = [...arch.gguf.metadata(cfg, opts.name, FILE_TYPE[opts.type]), ...tokenizerGgufMetadata(cfg, opts.tokenizerJson, opts.tokenizerConfig)];
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

/** Each piece of rows encoded as it comes (rows encode independently). */
async function* encodePieces(pieces: AsyncIterable<Float32Array>, type: number, hfName: string): AsyncIterable<Uint8Array> {
  let at = 0;
  for await (const f of pieces) {
    yield encode(f, type, hfName, at);
    at += f.length;
  }
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
