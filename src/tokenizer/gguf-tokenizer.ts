// The tokenizer of a GGUF file, rebuilt from its tokenizer.ggml.* metadata (tokens, token types,
// special ids, and scores or merges) and tokenizer.chat_template.
//
// It is handed to @huggingface/tokenizers as the tokenizer.json Gemma ships: BPE with byte
// fallback, normalizer " " → "▁", no pre-tokenizer, decoder ▁ → " " + byte fallback + fuse.
// Two vocabulary types hold such a tokenizer. Gemma 4 GGUFs ("gemma4") store the BPE merges
// (tokenizer.ggml.merges, each pair joined by a space, in rank order). Gemma 3 GGUFs
// (SentencePiece-style "llama") store no merges; they follow from the scores exactly as
// transformers' SentencePiece converter derives them: every split of a piece into two vocabulary
// pieces is a merge, ranked by the piece's score (higher first), then longer left part, longer
// right part, piece id, left id, right id. Control, unknown and user-defined tokens become added
// tokens (control and unknown ones special), so they are matched as whole strings first, as
// llama.cpp does.
import type { GgufFile, GgufValue } from '../io/gguf.js';
import { LutraError } from '../util/errors.js';
import { GemmaTokenizer } from './tokenizer.js';

/** llama.cpp token types (llama.h `llama_token_type`). */
const NORMAL = 1;
const UNKNOWN = 2;
const CONTROL = 3;
const USER_DEFINED = 4;
const BYTE = 6;

const BYTE_PIECE = /^<0x[0-9A-Fa-f]{2}>$/;

/** How to give a GGUF's weights a tokenizer, for error messages. */
function supplyHint(path: string): string {
  return `give the weights a tokenizer with lutra convert --model ${path} --out DIR --tokenizer TOKENIZER_DIR (a folder with tokenizer.json) and run DIR`;
}

function isNumberArray(v: GgufValue | undefined): v is Float32Array | Float64Array | Int32Array | Uint32Array | Int16Array | Uint16Array | Int8Array | Uint8Array {
  return ArrayBuffer.isView(v) && !(v instanceof BigInt64Array) && !(v instanceof BigUint64Array);
}

/** Number of UTF-16 units of each code point in `s` (1 or 2), in order. */
function codePointUnits(s: string): number[] {
  const out: number[] = [];
  for (let i = 0; i < s.length; ) {
    const c = s.charCodeAt(i);
    const n = c >= 0xd800 && c <= 0xdbff && i + 1 < s.length ? 2 : 1;
    out.push(n);
    i += n;
  }
  return out;
}

/**
 * BPE merges of a SentencePiece vocabulary, in rank order: for every piece, each split into two
 * pieces of the vocabulary, sorted by (score desc, left length desc, right length desc, piece id,
 * left id, right id), lengths in code points.
 */
export function mergesFromScores(tokens: readonly string[], scores: ArrayLike<number>, ids: ReadonlyMap<string, number>): [string, string][] {
  // Pieces by score (desc), then id; within one piece the splits go longest left part first.
  const n = tokens.length;
  const byScore = Array.from({ length: n }, (_, i) => i).sort((a, b) => scores[b]! - scores[a]! || a - b);
  const out: [string, string][] = [];
  // A run of pieces with equal scores interleaves their splits by length: collected, then sorted.
  let run: { l: number; r: number; piece: number; lenL: number; lenR: number }[] = [];
  let runPieces = 0;
  const flush = (): void => {
    if (runPieces > 1) run.sort((a, b) => b.lenL - a.lenL || b.lenR - a.lenR || a.piece - b.piece || a.l - b.l || a.r - b.r);
    for (const m of run) out.push([tokens[m.l]!, tokens[m.r]!]);
    run = [];
    runPieces = 0;
  };
  for (let k = 0; k < n; k++) {
    const id = byScore[k]!;
    if (k > 0 && scores[id] !== scores[byScore[k - 1]!]) flush();
    runPieces++;
    const p = tokens[id]!;
    const units = codePointUnits(p);
    // Longest left part first: cut points from the end.
    let cut = p.length;
    for (let c = units.length - 1; c >= 1; c--) {
      cut -= units[c]!;
      const l = ids.get(p.slice(0, cut));
      if (l === undefined) continue;
      const r = ids.get(p.slice(cut));
      if (r === undefined) continue;
      run.push({ l, r, piece: id, lenL: c, lenR: units.length - c });
    }
  }
  flush();
  return out;
}

export interface GgufTokenizerParts {
  /** An HF tokenizer.json equivalent of the GGUF vocabulary. */
  tokenizerJson: Record<string, unknown>;
  /** An HF tokenizer_config.json: special token strings, add_bos_token, chat_template. */
  tokenizerConfig: Record<string, unknown>;
  chatTemplate: string | null;
  /** eos (and end-of-turn) ids the GGUF names. */
  stopIds: number[];
}

/**
 * BPE merges stored in a GGUF (tokenizer.ggml.merges): each entry two pieces joined by one space.
 * A piece may itself contain spaces, so the split is the one space whose two sides are both
 * pieces of the vocabulary (exactly one must be).
 */
function storedMerges(path: string, raw: GgufValue | undefined, ids: ReadonlyMap<string, number>): [string, string][] {
  if (raw === undefined) throw new LutraError(`${path}: metadata "tokenizer.ggml.merges" is missing; a "gemma4" (BPE) tokenizer needs its merges`);
  if (!Array.isArray(raw) || raw.some((m) => typeof m !== 'string')) throw new LutraError(`${path}: tokenizer.ggml.merges is not an array of strings`);
  return (raw as string[]).map((m, i) => {
    let found: [string, string] | null = null;
    for (let at = m.indexOf(' '); at >= 0; at = m.indexOf(' ', at + 1)) {
      const l = m.slice(0, at);
      const r = m.slice(at + 1);
      if (!ids.has(l) || !ids.has(r)) continue;
      if (found) throw new LutraError(`${path}: tokenizer.ggml.merges[${i}] ${JSON.stringify(m)} splits into two pieces in more than one way`);
      found = [l, r];
    }
    if (!found) throw new LutraError(`${path}: tokenizer.ggml.merges[${i}] is ${JSON.stringify(m)}; expected two pieces of tokenizer.ggml.tokens joined by a space`);
    return found;
  });
}

/**
 * The HF tokenizer.json and tokenizer config equivalent to a GGUF file's tokenizer.ggml.* metadata.
 * `vocabSize` (the embedding's rows) bounds the token ids. LutraError naming the file and key for
 * a GGUF without a tokenizer, a tokenizer model other than "llama" or "gemma4", or inconsistent
 * arrays.
 */
export function ggufTokenizerParts(file: GgufFile, vocabSize?: number): GgufTokenizerParts {
  const path = file.path;
  const meta = file.metadata;
  const tokens = meta.get('tokenizer.ggml.tokens');
  if (tokens === undefined) {
    throw new LutraError(`${path}: no tokenizer in the GGUF (metadata "tokenizer.ggml.tokens" is missing); ${supplyHint(path)}`);
  }
  const model = meta.get('tokenizer.ggml.model');
  if (model !== 'llama' && model !== 'gemma4') {
    const shown = model === undefined ? 'missing' : JSON.stringify(typeof model === 'string' ? model : String(model));
    throw new LutraError(`${path}: tokenizer.ggml.model is ${shown}; lutra rebuilds only SentencePiece-style ("llama") and Gemma 4 BPE ("gemma4") GGUF tokenizers, as Gemma's; ${supplyHint(path)}`);
  }
  if (!Array.isArray(tokens) || tokens.some((t) => typeof t !== 'string')) throw new LutraError(`${path}: tokenizer.ggml.tokens is not an array of strings`);
  const pieces = tokens as string[];
  const n = pieces.length;
  if (n === 0) throw new LutraError(`${path}: tokenizer.ggml.tokens is empty`);
  if (vocabSize !== undefined && n > vocabSize) {
    throw new LutraError(`${path}: tokenizer.ggml.tokens has ${n} tokens but token_embd.weight has only ${vocabSize} rows`);
  }
  // Scores rank a "llama" vocabulary's merges; a "gemma4" one stores its merges instead.
  const scores = meta.get('tokenizer.ggml.scores');
  if (model === 'llama') {
    if (scores === undefined) throw new LutraError(`${path}: metadata "tokenizer.ggml.scores" is missing; a SentencePiece ("llama") tokenizer needs a score per token to rank its merges`);
    if (!isNumberArray(scores) || scores.length !== n) {
      throw new LutraError(`${path}: tokenizer.ggml.scores must be ${n} numbers (one per token of tokenizer.ggml.tokens)`);
    }
    const badScore = scores.findIndex((x: number) => !Number.isFinite(x));
    if (badScore >= 0) throw new LutraError(`${path}: tokenizer.ggml.scores[${badScore}] is ${scores[badScore]}; expected a finite number`);
  }
  const rawTypes = meta.get('tokenizer.ggml.token_type');
  if (rawTypes !== undefined && (!isNumberArray(rawTypes) || rawTypes.length !== n)) {
    throw new LutraError(`${path}: tokenizer.ggml.token_type must be ${n} integers (one per token of tokenizer.ggml.tokens)`);
  }
  if (meta.get('tokenizer.ggml.add_space_prefix') === true) {
    throw new LutraError(`${path}: tokenizer.ggml.add_space_prefix is true; lutra rebuilds Gemma-style tokenizers, which add no space prefix`);
  }
  // Without token types (llama.cpp then assumes normal tokens), <0xXX> pieces are still bytes.
  const types = rawTypes ?? Int32Array.from(pieces, (p) => (BYTE_PIECE.test(p) ? BYTE : NORMAL));

  const ids = new Map<string, number>();
  // No prototype: a piece named "__proto__" must become an own property, as JSON.parse makes it.
  const vocab: Record<string, number> = Object.create(null);
  const added: Record<string, unknown>[] = [];
  for (let id = 0; id < n; id++) {
    const p = pieces[id]!;
    const prev = ids.get(p);
    if (prev !== undefined) throw new LutraError(`${path}: tokenizer.ggml.tokens has ${JSON.stringify(p)} at ids ${prev} and ${id}; token strings must be unique`);
    ids.set(p, id);
    vocab[p] = id;
    const t = types[id]!;
    if (t === CONTROL || t === UNKNOWN || t === USER_DEFINED) {
      added.push({ id, content: p, single_word: false, lstrip: false, rstrip: false, normalized: false, special: t !== USER_DEFINED });
    }
  }

  const idKey = (key: string): number | undefined => {
    const v = meta.get(`tokenizer.ggml.${key}`);
    if (v === undefined) return undefined;
    const id = typeof v === 'bigint' ? Number(v) : v;
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= n) {
      throw new LutraError(`${path}: tokenizer.ggml.${key} is ${String(v)}; expected a token id below ${n}`);
    }
    return id;
  };
  const bos = idKey('bos_token_id') ?? ids.get('<bos>');
  if (bos === undefined) throw new LutraError(`${path}: metadata "tokenizer.ggml.bos_token_id" is missing and there is no <bos> token`);
  const eos = idKey('eos_token_id');
  const eot = idKey('eot_token_id');
  const unk = idKey('unknown_token_id') ?? ids.get('<unk>');
  const pad = idKey('padding_token_id');

  const template = meta.get('tokenizer.chat_template');
  if (template !== undefined && typeof template !== 'string') throw new LutraError(`${path}: tokenizer.chat_template is not a string`);
  const addBos = meta.get('tokenizer.ggml.add_bos_token');
  const addEos = meta.get('tokenizer.ggml.add_eos_token');

  const tokenizerJson: Record<string, unknown> = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: { type: 'Replace', pattern: { String: ' ' }, content: '▁' },
    pre_tokenizer: null,
    post_processor: null,
    decoder: {
      type: 'Sequence',
      decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: unk !== undefined ? pieces[unk] : null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab,
      merges: model === 'gemma4' ? storedMerges(path, meta.get('tokenizer.ggml.merges'), ids) : mergesFromScores(pieces, scores as ArrayLike<number>, ids),
    },
  };
  const tokenizerConfig: Record<string, unknown> = {
    bos_token: pieces[bos],
    add_bos_token: typeof addBos === 'boolean' ? addBos : true,
    add_eos_token: typeof addEos === 'boolean' ? addEos : false,
    clean_up_tokenization_spaces: false,
  };
  if (eos !== undefined) tokenizerConfig.eos_token = pieces[eos];
  if (unk !== undefined) tokenizerConfig.unk_token = pieces[unk];
  if (pad !== undefined) tokenizerConfig.pad_token = pieces[pad];
  if (typeof template === 'string') tokenizerConfig.chat_template = template;
  const stopIds = [eos, eot].filter((x): x is number => x !== undefined);
  return { tokenizerJson, tokenizerConfig, chatTemplate: typeof template === 'string' ? template : null, stopIds };
}

/**
 * The GemmaTokenizer of a GGUF file. Stop ids: the GGUF's eos (and eot) id, `extraStops` (the
 * config's eos ids), and what GemmaTokenizer adds (<eos>, the chat template's turn-closing token).
 */
export function loadGgufTokenizer(file: GgufFile, extraStops: number[] = [], vocabSize?: number): GemmaTokenizer {
  const parts = ggufTokenizerParts(file, vocabSize);
  return GemmaTokenizer.fromJson(parts.tokenizerJson, parts.tokenizerConfig, parts.chatTemplate, [...parts.stopIds, ...extraStops], file.path, `${file.path} (tokenizer.ggml.* metadata)`);
}
