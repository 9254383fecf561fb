// Gemma 4's tokenizer layout and chat format, and a Gemma 4 tokenizer made from a Gemma 3 one for
// fixtures and tests.
//
// Gemma 4 keeps Gemma 3's BPE vocabulary of 262144 pieces (SentencePiece-style: spaces become "▁",
// byte fallback, no dummy prefix) and changes only special tokens: the turn markers are `<|turn>`
// and `<turn|>` at the ids of Gemma 3's `<start_of_turn>` / `<end_of_turn>` (105 / 106), and there
// are new image, audio, video, thinking-channel and tool-call markers. Its tokenizer adds no <bos>
// by itself; the chat template writes it. Generation stops on <eos> (1) or `<turn|>` (106).
//
// deriveGemma4Tokenizer() turns a Gemma 3 tokenizer.json + tokenizer_config.json into that layout:
// same pieces, same merges, so ordinary text gets the same ids as under Gemma 3. The ids of the
// channel, thinking and tool tokens are not fixed by anything this project relies on; the derived
// tokenizer puts them on free (unused) Gemma 3 ids, listed in GEMMA4_PLACEHOLDER_IDS. They are
// placeholders for fixtures only: a real Gemma 4 checkpoint ships a tokenizer.json with its own.
import { LutraError } from '../util/errors.js';

/** Rows of Gemma 4's embedding: pieces with ids 0 .. 262143. */
export const GEMMA4_VOCAB_SIZE = 262144;

/** Token ids Gemma 4 fixes (its configuration and chat format name them). */
export const GEMMA4_SPECIAL_IDS: Readonly<Record<string, number>> = Object.freeze({
  '<pad>': 0,
  '<eos>': 1,
  '<bos>': 2,
  '<unk>': 3,
  '<|turn>': 105,
  '<turn|>': 106,
  '<|image>': 255999,
  '<|audio>': 256000,
  '<|image|>': 258880,
  '<|audio|>': 258881,
  '<image|>': 258882,
  '<audio|>': 258883,
  '<|video|>': 258884,
});

/**
 * Ids the derived fixture tokenizer gives Gemma 4's other special tokens: free ids of the Gemma 3
 * vocabulary right after `<|video|>`. Placeholders; a real Gemma 4 tokenizer.json has its own.
 */
export const GEMMA4_PLACEHOLDER_IDS: Readonly<Record<string, number>> = Object.freeze({
  '<|channel>': 258885,
  '<channel|>': 258886,
  '<|think|>': 258887,
  '<|tool>': 258888,
  '<tool|>': 258889,
  '<|tool_call>': 258890,
  '<tool_call|>': 258891,
  '<|tool_response>': 258892,
  '<tool_response|>': 258893,
  '<|"|>': 258894,
});

/**
 * The Gemma 4 chat template (Jinja). Output: the <bos> token; the system message, when it comes
 * first, as a turn of its own; each user / assistant message as `<|turn>user` / `<|turn>model`,
 * a newline, its text trimmed, `<turn|>` and a newline; with add_generation_prompt, `<|turn>model`
 * and a newline for the answer. Content is a string or a list of parts whose text parts are
 * joined (each trimmed). A system message elsewhere, an unknown role or other content raises.
 */
export const GEMMA4_CHAT_TEMPLATE = `{#- Gemma 4 chat format: one <|turn>ROLE ... <turn|> block per message. -#}
{%- macro message_text(content) -%}
    {%- if content is string -%}
        {{- content | trim -}}
    {%- elif content is iterable -%}
        {%- for part in content -%}
            {%- if part['type'] == 'text' -%}
                {{- part['text'] | trim -}}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{- raise_exception('message content must be a string or a list of parts') -}}
    {%- endif -%}
{%- endmacro -%}
{{- bos_token -}}
{%- for message in messages -%}
    {%- if message['role'] == 'user' -%}
        {%- set role = 'user' -%}
    {%- elif message['role'] == 'assistant' -%}
        {%- set role = 'model' -%}
    {%- elif message['role'] == 'system' and loop.first -%}
        {%- set role = 'system' -%}
    {%- elif message['role'] == 'system' -%}
        {{- raise_exception('a system message must be the first message') -}}
    {%- else -%}
        {{- raise_exception('unknown role "' + (message['role'] | string) + '" for the Gemma 4 chat format; expected system, user or assistant') -}}
    {%- endif -%}
    {{- '<|turn>' + role + '\\n' + message_text(message['content']) + '<turn|>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|turn>model\\n' -}}
{%- endif -%}
`;

/** Gemma 3 pieces the derivation replaces, with the id each must have in a Gemma 3 tokenizer. */
const GEMMA3_EXPECTED: Readonly<Record<number, string>> = {
  0: '<pad>',
  1: '<eos>',
  2: '<bos>',
  3: '<unk>',
  105: '<start_of_turn>',
  106: '<end_of_turn>',
};

/** Image / audio / video marker names recorded in the tokenizer config (as Gemma 3 records boi/eoi/image). */
const GEMMA4_MEDIA_CONFIG: Readonly<Record<string, string>> = {
  boi_token: '<|image>',
  eoi_token: '<image|>',
  image_token: '<|image|>',
  boa_token: '<|audio>',
  eoa_token: '<audio|>',
  audio_token: '<|audio|>',
  video_token: '<|video|>',
};

/** Gemma 3 tokenizer_config.json fields that do not carry over to Gemma 4. */
const GEMMA3_ONLY_CONFIG = ['chat_template', 'added_tokens_decoder', 'additional_special_tokens', 'extra_special_tokens', 'processor_class', 'boi_token', 'eoi_token', 'image_token'];

interface AddedToken {
  id: number;
  content: string;
  single_word: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isId(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0;
}

/** Filler piece for an id the source vocabulary lacks; never equal to an existing piece. */
function fillerName(id: number, taken: Map<string, number>): string {
  let name = `<fill${id}>`;
  while (taken.has(name)) name = `<${name}>`;
  return name;
}

/**
 * A Gemma 4 tokenizer (tokenizer.json and tokenizer_config.json contents) from a Gemma 3 one:
 * the same BPE model and merges; ids 0 .. 262143 only (higher ids, e.g. Gemma 3's
 * `<image_soft_token>`, dropped; ids the source lacks filled with non-special `<fillN>` pieces);
 * `<start_of_turn>` / `<end_of_turn>` renamed `<|turn>` / `<turn|>`; the other Gemma 4 special
 * tokens written over the Gemma 3 added tokens at their ids (GEMMA4_SPECIAL_IDS, and
 * GEMMA4_PLACEHOLDER_IDS for the ones whose real ids are unknown here); no <bos> added by the
 * tokenizer; GEMMA4_CHAT_TEMPLATE as the chat template. The inputs are not modified.
 * LutraError naming the field when the input is not a Gemma 3 BPE tokenizer with that layout.
 */
export function deriveGemma4Tokenizer(gemma3TokenizerJson: any, gemma3TokenizerConfig: any): { tokenizerJson: any; tokenizerConfig: any } {
  const what = 'Gemma 3 tokenizer.json';
  if (!isRecord(gemma3TokenizerJson)) throw new LutraError(`${what}: expected a JSON object`);
  if (gemma3TokenizerConfig !== undefined && gemma3TokenizerConfig !== null && !isRecord(gemma3TokenizerConfig)) {
    throw new LutraError('Gemma 3 tokenizer_config.json: expected a JSON object');
  }
  const model = gemma3TokenizerJson.model;
  if (!isRecord(model) || model.type !== 'BPE') throw new LutraError(`${what}: "model.type" is ${JSON.stringify(isRecord(model) ? model.type : model)}; expected "BPE"`);
  if (!isRecord(model.vocab)) throw new LutraError(`${what}: "model.vocab" must be an object mapping pieces to ids`);
  if (!Array.isArray(model.merges)) throw new LutraError(`${what}: "model.merges" must be an array`);
  const addedIn = gemma3TokenizerJson.added_tokens ?? [];
  if (!Array.isArray(addedIn)) throw new LutraError(`${what}: "added_tokens" must be an array`);

  const N = GEMMA4_VOCAB_SIZE;
  // Pieces by id (ids below N only), from the vocabulary and then the added tokens.
  const pieceOf = new Map<number, string>();
  const idOf = new Map<string, number>();
  for (const [piece, id] of Object.entries(model.vocab)) {
    if (!isId(id)) throw new LutraError(`${what}: "model.vocab" gives ${JSON.stringify(piece)} the id ${JSON.stringify(id)}; expected a non-negative integer`);
    if (id >= N) continue;
    const prev = pieceOf.get(id);
    if (prev !== undefined) throw new LutraError(`${what}: "model.vocab" gives id ${id} to both ${JSON.stringify(prev)} and ${JSON.stringify(piece)}`);
    pieceOf.set(id, piece);
    idOf.set(piece, id);
  }
  const added = new Map<number, AddedToken>();
  addedIn.forEach((t: unknown, i: number) => {
    if (!isRecord(t) || !isId(t.id) || typeof t.content !== 'string') throw new LutraError(`${what}: added_tokens[${i}] must have an integer "id" and a string "content"`);
    if (t.id >= N) return;
    const inVocab = pieceOf.get(t.id);
    if (inVocab !== undefined && inVocab !== t.content) {
      throw new LutraError(`${what}: added_tokens[${i}] is ${JSON.stringify(t.content)} at id ${t.id}, where "model.vocab" has ${JSON.stringify(inVocab)}`);
    }
    if (inVocab === undefined) {
      const other = idOf.get(t.content);
      if (other !== undefined) throw new LutraError(`${what}: added_tokens[${i}] ${JSON.stringify(t.content)} has id ${t.id} but "model.vocab" gives it ${other}`);
      pieceOf.set(t.id, t.content);
      idOf.set(t.content, t.id);
    }
    added.set(t.id, {
      id: t.id,
      content: t.content,
      single_word: t.single_word === true,
      lstrip: t.lstrip === true,
      rstrip: t.rstrip === true,
      normalized: t.normalized === true,
      special: t.special === true,
    });
  });
  for (const [id, name] of Object.entries(GEMMA3_EXPECTED)) {
    const got = pieceOf.get(Number(id));
    if (got !== name) throw new LutraError(`${what}: id ${id} is ${got === undefined ? 'missing' : JSON.stringify(got)}; expected ${JSON.stringify(name)} (Gemma 3's layout)`);
  }

  // Gemma 4's specials replace whatever Gemma 3 has at their ids; that must be an added token
  // (control or unused), never a piece of ordinary text.
  const replace = new Map<number, string>();
  for (const [name, id] of [...Object.entries(GEMMA4_SPECIAL_IDS), ...Object.entries(GEMMA4_PLACEHOLDER_IDS)]) {
    const old = pieceOf.get(id);
    if (old === name) continue;
    if (old !== undefined && !added.has(id)) {
      throw new LutraError(`${what}: id ${id} is the ordinary piece ${JSON.stringify(old)}; Gemma 4's ${name} needs it to be a special or unused token`);
    }
    const clash = idOf.get(name);
    if (clash !== undefined) throw new LutraError(`${what}: ${JSON.stringify(name)} is already id ${clash}; Gemma 4 puts it at id ${id}`);
    replace.set(id, name);
  }
  const replaced = new Set<string>();
  for (const id of replace.keys()) {
    const old = pieceOf.get(id);
    if (old !== undefined) replaced.add(old);
  }
  const merges = model.merges.map((m: unknown, i: number) => {
    const parts = Array.isArray(m) ? m : typeof m === 'string' ? m.split(' ') : null;
    if (!parts || parts.length !== 2 || typeof parts[0] !== 'string' || typeof parts[1] !== 'string') {
      throw new LutraError(`${what}: model.merges[${i}] must be a pair of pieces`);
    }
    if (replaced.has(parts[0]) || replaced.has(parts[1]) || replaced.has(parts[0] + parts[1])) {
      throw new LutraError(`${what}: model.merges[${i}] involves ${JSON.stringify(parts.join(' '))}, a token Gemma 4 replaces`);
    }
    return Array.isArray(m) ? [parts[0], parts[1]] : m;
  });
  for (const [id, name] of replace) {
    const old = pieceOf.get(id);
    if (old !== undefined) idOf.delete(old);
    pieceOf.set(id, name);
    idOf.set(name, id);
    added.set(id, { id, content: name, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  }
  for (let id = 0; id < N; id++) {
    if (pieceOf.has(id)) continue;
    const name = fillerName(id, idOf);
    pieceOf.set(id, name);
    idOf.set(name, id);
    added.set(id, { id, content: name, single_word: false, lstrip: false, rstrip: false, normalized: false, special: false });
  }

  // No prototype: a piece named "__proto__" must stay an own key.
  const vocab: Record<string, number> = Object.create(null);
  for (let id = 0; id < N; id++) vocab[pieceOf.get(id)!] = id;
  const addedTokens = [...added.values()].sort((a, b) => a.id - b.id);
  const tokenizerJson = {
    ...gemma3TokenizerJson,
    added_tokens: addedTokens,
    // Nothing is added around the text: the chat template writes <bos>.
    post_processor: null,
    model: { ...model, vocab, merges },
  };

  const tokenizerConfig: Record<string, unknown> = { ...(gemma3TokenizerConfig ?? {}) };
  for (const k of GEMMA3_ONLY_CONFIG) delete tokenizerConfig[k];
  const decoder: Record<string, Omit<AddedToken, 'id'>> = {};
  for (const { id, ...rest } of addedTokens) decoder[String(id)] = rest;
  Object.assign(tokenizerConfig, {
    add_bos_token: false,
    add_eos_token: false,
    bos_token: '<bos>',
    eos_token: '<eos>',
    pad_token: '<pad>',
    unk_token: '<unk>',
    ...GEMMA4_MEDIA_CONFIG,
    added_tokens_decoder: decoder,
    tokenizer_class: 'GemmaTokenizer',
    chat_template: GEMMA4_CHAT_TEMPLATE,
  });
  return { tokenizerJson, tokenizerConfig };
}
