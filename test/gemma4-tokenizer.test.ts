// The Gemma 4 fixture tokenizer derived from the Gemma 3 one: vocabulary size and special ids,
// encoding and decoding, the chat template, stop tokens taken from the files, and the same
// tokenizer rebuilt from a "gemma4" GGUF's metadata.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { GemmaTokenizer, type ChatMessage } from '../src/tokenizer/tokenizer.js';
import { deriveGemma4Tokenizer, GEMMA4_CHAT_TEMPLATE, GEMMA4_PLACEHOLDER_IDS, GEMMA4_SPECIAL_IDS, GEMMA4_VOCAB_SIZE } from '../src/tokenizer/gemma4.js';
import { ggufTokenizerParts, loadGgufTokenizer } from '../src/tokenizer/gguf-tokenizer.js';
import { gemmaTokenizerFiles } from '../src/model/fixture.js';
import { kv, readGguf, writeGguf } from '../src/io/gguf.js';
import { LutraError } from '../src/util/errors.js';

const root = mkdtempSync(join(tmpdir(), 'lutra-g4tok-'));
test.after(() => rmSync(root, { recursive: true, force: true }));

const files = gemmaTokenizerFiles();
const g3Json = JSON.parse(readFileSync(files.tokenizer, 'utf8'));
const g3Config = JSON.parse(readFileSync(files.config, 'utf8'));
const g3AddedCount = g3Json.added_tokens.length;
const derived = deriveGemma4Tokenizer(g3Json, g3Config);
const g3 = GemmaTokenizer.fromJson(g3Json, g3Config, g3Config.chat_template, [], 'gemma 3');
const g4 = GemmaTokenizer.fromJson(derived.tokenizerJson, derived.tokenizerConfig, derived.tokenizerConfig.chat_template, [], 'gemma 4');

const ALL_SPECIALS = { ...GEMMA4_SPECIAL_IDS, ...GEMMA4_PLACEHOLDER_IDS };

/** Ordinary text (no special-token strings): heldout lines of the demo model, the bench prompts, awkward strings. */
function ordinaryTexts(): string[] {
  return allTexts().filter((s) => !/<(start_of_turn|end_of_turn|start_of_image|end_of_image|bos|eos|pad|unk|mask)>/.test(s));
}

function allTexts(): string[] {
  const lines = readFileSync(resolve('models/demo/heldout-full.txt'), 'utf8').split('\n').filter((l) => l.length > 0).slice(0, 400);
  const prompts = readFileSync(resolve('bench/prompts.jsonl'), 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l).prompt as string);
  return [
    ...lines,
    ...prompts,
    'héllo wörld — ünïcödé ñ ç ß ø å',
    'emoji 😀🎉👍🏽 and a family 👩‍👩‍👧',
    '日本語のテキストです。中文文本。한국어 텍스트',
    '   leading spaces, and    runs     of   spaces   ',
    'tabs\tand\t\t\ttabs, newlines\n\nand\n\n\n\nmore\r\n',
    'digits 0123456789 3.14159 1,000,000',
    'code: function f(x) { return x ** 2; }',
    'angle brackets <|turn and turn|> and <| and |> apart',
  ];
}

test('the derived tokenizer has 262144 pieces, the Gemma 4 special ids, and leaves its inputs alone', () => {
  const { tokenizerJson: tj, tokenizerConfig: tc } = derived;
  const vocab = tj.model.vocab as Record<string, number>;
  const ids = Object.values(vocab);
  assert.equal(ids.length, GEMMA4_VOCAB_SIZE);
  assert.equal(new Set(ids).size, GEMMA4_VOCAB_SIZE);
  assert.ok(ids.every((id) => id >= 0 && id < GEMMA4_VOCAB_SIZE));
  assert.ok(tj.added_tokens.every((t: { id: number }) => t.id < GEMMA4_VOCAB_SIZE));
  // Gemma 3's 262145th token is gone; so are its turn and image markers.
  for (const gone of ['<image_soft_token>', '<start_of_turn>', '<end_of_turn>', '<start_of_image>', '<end_of_image>']) {
    assert.equal(vocab[gone], undefined, gone);
    assert.equal(g4.tokenId(gone), undefined, gone);
  }
  const specials = new Map(tj.added_tokens.map((t: { content: string; id: number; special: boolean }) => [t.content, t]));
  for (const [name, id] of Object.entries(ALL_SPECIALS)) {
    assert.equal(vocab[name], id, `${name} in the vocabulary`);
    assert.equal(g4.tokenId(name), id, name);
    assert.deepEqual(specials.get(name), { id, content: name, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }, name);
  }
  assert.deepEqual([g4.tokenId('<|turn>'), g4.tokenId('<turn|>'), g4.tokenId('<|image>'), g4.tokenId('<|audio>'), g4.tokenId('<|video|>')], [105, 106, 255999, 256000, 258884]);
  // Pieces of ordinary text keep their ids; merges are Gemma 3's.
  assert.deepEqual([vocab['user'], vocab['\n'], vocab['▁the'], vocab['<0x41>']], [2364, 107, g3.tokenId('▁the'), g3.tokenId('<0x41>')]);
  assert.equal(tj.model.merges.length, g3Json.model.merges.length);
  assert.equal(tj.post_processor, null);

  assert.equal(tc.add_bos_token, false);
  assert.equal(tc.add_eos_token, false);
  assert.deepEqual([tc.bos_token, tc.eos_token, tc.pad_token, tc.unk_token], ['<bos>', '<eos>', '<pad>', '<unk>']);
  assert.equal(tc.chat_template, GEMMA4_CHAT_TEMPLATE);
  assert.equal(tc.image_token, '<|image|>');
  assert.equal(tc.added_tokens_decoder['106'].content, '<turn|>');
  assert.equal(tc.processor_class, undefined);
  assert.deepEqual([g4.bosId, g4.tokenId('<eos>'), g4.tokenId('<pad>'), g4.tokenId('<unk>')], [2, 1, 0, 3]);

  // The Gemma 3 inputs are unchanged.
  assert.equal(g3Json.model.vocab['<start_of_turn>'], 105);
  assert.equal(g3Json.added_tokens.length, g3AddedCount);
  assert.equal(g3Json.added_tokens[105].content, '<start_of_turn>');
  assert.equal(g3Config.eos_token, '<end_of_turn>');
  assert.equal(g3Json.post_processor.type, 'TemplateProcessing');
});

test('special tokens encode as single ids; decoding round-trips', () => {
  assert.deepEqual(g4.encode('<|turn>user\nhi<turn|>', { bos: false }), [105, 2364, 107, 2202, 106]);
  assert.deepEqual(g4.encode('<|turn>model\n', { bos: false }), [105, 4368, 107]);
  for (const [name, id] of Object.entries(ALL_SPECIALS)) {
    if (id === 2) continue; // encode() drops a leading <bos> into its own
    assert.deepEqual(g4.encode(`a${name}b`, { bos: false }), [g3.tokenId('a'), id, g3.tokenId('b')], name);
  }
  const text = '<|turn>system\nThink.<turn|>\n<|turn>model\n<|channel>thought\nhmm<channel|><|tool_call>call:f{x:<|"|>é 😀<|"|>}<tool_call|><|image><|image|><image|><turn|>';
  const ids = g4.encode(text);
  assert.equal(ids.filter((i) => i === 2).length, 1);
  assert.equal(g4.decode(ids, false), '<bos>' + text);
  // Special tokens are left out by default.
  assert.equal(g4.decode(ids), 'system\nThink.\nmodel\nthought\nhmmcall:f{x:é 😀}');
  // Gemma 3's turn marker is plain text to Gemma 4.
  const old = g4.encode('<start_of_turn>', { bos: false });
  assert.ok(old.length > 1 && !old.includes(105), String(old));
  assert.equal(g4.decode(old), '<start_of_turn>');
});

test('ordinary text gets exactly the Gemma 3 ids', (t) => {
  let n = 0;
  for (const s of ordinaryTexts()) {
    const want = g3.encode(s, { bos: false });
    assert.deepEqual(g4.encode(s, { bos: false }), want, JSON.stringify(s.slice(0, 80)));
    assert.equal(g4.decode(want), g3.decode(want));
    n += want.length;
  }
  t.diagnostic(`${n} tokens identical`);
});

test('the chat template: <bos>, a system turn, user and model turns, the generation prompt', () => {
  const messages: ChatMessage[] = [
    { role: 'system', content: '  You are terse.\n' },
    { role: 'user', content: 'What is the capital of France? ' },
    { role: 'assistant', content: '\nParis.' },
    { role: 'user', content: 'And of Japan?' },
  ];
  const expected =
    '<bos><|turn>system\nYou are terse.<turn|>\n' +
    '<|turn>user\nWhat is the capital of France?<turn|>\n' +
    '<|turn>model\nParis.<turn|>\n' +
    '<|turn>user\nAnd of Japan?<turn|>\n' +
    '<|turn>model\n';
  assert.equal(g4.renderChat(messages), expected);
  assert.equal(g4.renderChat(messages, false), expected.slice(0, -'<|turn>model\n'.length));
  assert.equal(g4.renderChat([{ role: 'user', content: 'hi' }]), '<bos><|turn>user\nhi<turn|>\n<|turn>model\n');
  // No alternation rule: two user turns in a row are rendered as given.
  assert.equal(g4.renderChat([{ role: 'user', content: 'a' }, { role: 'user', content: 'b' }], false), '<bos><|turn>user\na<turn|>\n<|turn>user\nb<turn|>\n');
  // Content as a list of parts: the text parts, each trimmed.
  const parts = [{ role: 'user', content: [{ type: 'text', text: ' one ' }, { type: 'image' }, { type: 'text', text: 'two' }] }] as unknown as ChatMessage[];
  assert.equal(g4.renderChat(parts), '<bos><|turn>user\nonetwo<turn|>\n<|turn>model\n');
  // One <bos>: the template writes it and the tokenizer adds none.
  const ids = g4.encodeChat([{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'hi' }]);
  assert.deepEqual(ids, [2, 105, 9731, 107, ...g3.encode('Be brief.', { bos: false }), 106, 107, 105, 2364, 107, 2202, 106, 107, 105, 4368, 107]);
});

test('the chat template rejects an unknown role, a late system message and bad content', () => {
  const err = (messages: unknown[], pattern: RegExp) =>
    assert.throws(() => g4.renderChat(messages as ChatMessage[]), (e: unknown) => e instanceof LutraError && pattern.test(e.message) && !e.message.includes('\n'));
  err([{ role: 'user', content: 'hi' }, { role: 'tool', content: '{}' }], /^chat template: unknown role "tool" for the Gemma 4 chat format; expected system, user or assistant$/);
  err([{ role: 'model', content: 'hi' }], /unknown role "model"/);
  err([{ role: 'user', content: 'hi' }, { role: 'system', content: 'late' }], /^chat template: a system message must be the first message$/);
  err([{ role: 'user', content: 42 }], /^chat template: message content must be a string or a list of parts$/);
});

test('a folder with the derived files: stops on <eos> and <turn|> with no ids given; Gemma 3 and the demo model keep theirs', () => {
  const dir = join(root, 'gemma4-tok');
  mkdirSync(dir);
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(derived.tokenizerJson));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(derived.tokenizerConfig));
  const tok = GemmaTokenizer.load(dir);
  assert.equal(tok.turnEndId, 106);
  assert.deepEqual([...tok.stopIds].sort((a, b) => a - b), [1, 106]);
  assert.ok(!tok.stopIds.has(105));
  assert.deepEqual(tok.encodeChat([{ role: 'user', content: 'hi' }]), [2, 105, 2364, 107, 2202, 106, 107, 105, 4368, 107]);
  // A chat_template.jinja next to the files wins over the config's template; the token that
  // follows a message's text (after whitespace) closes the turn.
  writeFileSync(join(dir, 'chat_template.jinja'), '{{ bos_token }}{% for m in messages %}{{ m.content }}\n<|tool_response>{% endfor %}');
  const other = GemmaTokenizer.load(dir, [106]);
  assert.equal(other.turnEndId, GEMMA4_PLACEHOLDER_IDS['<|tool_response>']);
  assert.deepEqual([...other.stopIds].sort((a, b) => a - b), [1, 106, 258892]);

  // Gemma 3's files give <end_of_turn> (from its template) and <eos>, as before.
  assert.equal(g3.turnEndId, 106);
  assert.deepEqual([...g3.stopIds].sort((a, b) => a - b), [1, 106]);
  // The demo model's own vocabulary has its turn markers at 4 and 5.
  const demo = GemmaTokenizer.load(resolve('models/demo'));
  assert.equal(demo.turnEndId, 5);
  assert.deepEqual([...demo.stopIds].sort((a, b) => a - b), [1, 5]);
  // Without a chat template, the turn-closing token is found by name.
  const bare = GemmaTokenizer.fromJson(derived.tokenizerJson, { ...derived.tokenizerConfig, chat_template: undefined }, null, [], 'bare');
  assert.equal(bare.hasChatTemplate, false);
  assert.equal(bare.turnEndId, 106);
  assert.deepEqual([...bare.stopIds].sort((a, b) => a - b), [1, 106]);
});

test('a smaller Gemma-3-layout vocabulary is filled up to 262144 ids and still encodes as before', () => {
  // Pieces with ids below 2000 (specials, bytes, common pieces) and the merges among them.
  const keep = 2000;
  const vocab: Record<string, number> = {};
  for (const [p, id] of Object.entries(g3Json.model.vocab as Record<string, number>)) if (id < keep) vocab[p] = id;
  const merges = (g3Json.model.merges as [string, string][]).filter(([a, b]) => a in vocab && b in vocab && a + b in vocab);
  const small = { ...g3Json, added_tokens: g3Json.added_tokens.filter((t: { id: number }) => t.id < keep), model: { ...g3Json.model, vocab, merges } };
  const d = deriveGemma4Tokenizer(small, g3Config);
  const dv = d.tokenizerJson.model.vocab as Record<string, number>;
  assert.equal(Object.keys(dv).length, GEMMA4_VOCAB_SIZE);
  assert.equal(dv['<fill2000>'], 2000);
  assert.equal(dv['<fill262143>'], 262143);
  assert.equal(dv['<|video|>'], 258884);
  const fill = d.tokenizerJson.added_tokens.find((t: { id: number }) => t.id === 5000);
  assert.deepEqual(fill, { id: 5000, content: '<fill5000>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: false });
  const before = GemmaTokenizer.fromJson(small, g3Config, null, [], 'small');
  const after = GemmaTokenizer.fromJson(d.tokenizerJson, d.tokenizerConfig, d.tokenizerConfig.chat_template, [], 'small gemma 4');
  for (const s of ordinaryTexts().slice(0, 100)) assert.deepEqual(after.encode(s), before.encode(s), JSON.stringify(s.slice(0, 80)));
  assert.deepEqual(after.encode('<|turn>user\nthe<turn|>', { bos: false }), [105, ...before.encode('user\nthe', { bos: false }), 106]);
});

test('inputs that are not a Gemma 3 tokenizer are one-line errors naming the field', () => {
  const demoJson = JSON.parse(readFileSync(resolve('models/demo/tokenizer.json'), 'utf8'));
  const demoConfig = JSON.parse(readFileSync(resolve('models/demo/tokenizer_config.json'), 'utf8'));
  const fails = (json: unknown, pattern: RegExp) =>
    assert.throws(() => deriveGemma4Tokenizer(json, demoConfig), (e: unknown) => e instanceof LutraError && pattern.test(e.message) && !e.message.includes('\n'));
  // The demo model's vocabulary has <start_of_turn> at 4, not 105.
  fails(demoJson, /^Gemma 3 tokenizer\.json: id 105 is ".*"; expected "<start_of_turn>" \(Gemma 3's layout\)$/);
  fails([], /^Gemma 3 tokenizer\.json: expected a JSON object$/);
  fails({ ...demoJson, model: { ...demoJson.model, type: 'Unigram' } }, /"model\.type" is "Unigram"; expected "BPE"/);
  fails({ ...demoJson, model: { ...demoJson.model, merges: 'x' } }, /"model\.merges" must be an array/);
  // Gemma 4's ids must land on special or unused tokens, never on ordinary pieces.
  const v = { ...g3Json.model.vocab };
  const plain = Object.keys(v).find((p) => v[p] === 5000)!;
  delete v['<unused2978>'];
  delete v[plain];
  v[plain] = 258880;
  v['<unused2978>'] = 5000;
  const moved = {
    ...g3Json,
    added_tokens: g3Json.added_tokens.map((t: { id: number; content: string }) => (t.id === 258880 ? { ...t, id: 5000 } : t)),
    model: { ...g3Json.model, vocab: v },
  };
  fails(moved, new RegExp(`id 258880 is the ordinary piece ${JSON.stringify(plain).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}; Gemma 4's <\\|image\\|> needs it to be a special or unused token`));
});

test('a "gemma4" GGUF tokenizer (stored merges) encodes, decodes and stops as the derived tokenizer.json', async (t) => {
  const tj = derived.tokenizerJson;
  const pieces: string[] = new Array(GEMMA4_VOCAB_SIZE);
  for (const [p, id] of Object.entries(tj.model.vocab as Record<string, number>)) pieces[id] = p;
  const added = new Map<number, { special: boolean }>(tj.added_tokens.map((a: { id: number; special: boolean }) => [a.id, a]));
  // As the official converter does: these render in output, so they are user-defined, not control.
  const shown = new Set(['<|channel>', '<channel|>', '<|tool_call>', '<tool_call|>', '<|tool_response>', '<tool_response|>', '<|"|>']);
  const types = pieces.map((p, id) => (id === 3 ? 2 : shown.has(p) ? 4 : added.get(id)?.special ? 3 : added.has(id) ? 4 : /^<0x[0-9A-F]{2}>$/.test(p) ? 6 : 1));
  const path = join(root, 'gemma4-vocab.gguf');
  await writeGguf(path, [
    kv.str('tokenizer.ggml.model', 'gemma4'),
    kv.arr.str('tokenizer.ggml.tokens', pieces),
    kv.arr.f32('tokenizer.ggml.scores', pieces.map(() => -1000)),
    kv.arr.i32('tokenizer.ggml.token_type', types),
    kv.arr.str('tokenizer.ggml.merges', (tj.model.merges as [string, string][]).map(([a, b]) => `${a} ${b}`)),
    kv.u32('tokenizer.ggml.bos_token_id', 2),
    kv.u32('tokenizer.ggml.eos_token_id', 1),
    kv.u32('tokenizer.ggml.unknown_token_id', 3),
    kv.u32('tokenizer.ggml.padding_token_id', 0),
    kv.bool('tokenizer.ggml.add_bos_token', true),
    kv.str('tokenizer.chat_template', GEMMA4_CHAT_TEMPLATE),
  ], []);
  const t0 = performance.now();
  const gguf = loadGgufTokenizer(readGguf(path));
  t.diagnostic(`read the GGUF and built the tokenizer in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const texts = [...ordinaryTexts(), '<|turn>user\nhi<turn|>', '<|channel>thought\nx<channel|><|tool_call>call:f{a:<|"|>b<|"|>}<tool_call|>'];
  for (const s of texts) assert.deepEqual(gguf.encode(s), g4.encode(s), JSON.stringify(s.slice(0, 80)));
  const chat: ChatMessage[] = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'hi' }];
  assert.equal(gguf.renderChat(chat), g4.renderChat(chat));
  assert.deepEqual(gguf.encodeChat(chat), g4.encodeChat(chat));
  assert.equal(gguf.turnEndId, 106);
  assert.deepEqual([...gguf.stopIds].sort((a, b) => a - b), [1, 106]);
  // User-defined tokens are shown when special tokens are skipped; control ones are not.
  assert.equal(gguf.decode(gguf.encode('<|turn><|channel>x<channel|><turn|>')), '<|channel>x<channel|>');

  // A "gemma4" vocabulary without merges, or with a merge that is not two pieces, names the key.
  const noMerges = join(root, 'no-merges.gguf');
  await writeGguf(noMerges, [kv.str('tokenizer.ggml.model', 'gemma4'), kv.arr.str('tokenizer.ggml.tokens', ['<pad>', '<eos>', '<bos>', '<unk>', 'a', 'b', 'ab'])], []);
  assert.throws(() => ggufTokenizerParts(readGguf(noMerges)), (e: unknown) => e instanceof LutraError && /no-merges\.gguf: metadata "tokenizer\.ggml\.merges" is missing; a "gemma4" \(BPE\) tokenizer needs its merges/.test(e.message));
  const badMerge = join(root, 'bad-merge.gguf');
  await writeGguf(badMerge, [
    kv.str('tokenizer.ggml.model', 'gemma4'),
    kv.arr.str('tokenizer.ggml.tokens', ['<pad>', '<eos>', '<bos>', '<unk>', 'a', 'b', 'ab']),
    kv.arr.str('tokenizer.ggml.merges', ['a b', 'a c']),
  ], []);
  assert.throws(() => ggufTokenizerParts(readGguf(badMerge)), /bad-merge\.gguf: tokenizer\.ggml\.merges\[1\] is "a c"; expected two pieces of tokenizer\.ggml\.tokens joined by a space/);
  const goodMerge = join(root, 'good-merge.gguf');
  await writeGguf(goodMerge, [
    kv.str('tokenizer.ggml.model', 'gemma4'),
    kv.arr.str('tokenizer.ggml.tokens', ['<pad>', '<eos>', '<bos>', '<unk>', 'a', 'b', 'ab']),
    kv.arr.i32('tokenizer.ggml.token_type', [3, 3, 3, 2, 1, 1, 1]),
    kv.arr.str('tokenizer.ggml.merges', ['a b']),
  ], []);
  const parts = ggufTokenizerParts(readGguf(goodMerge));
  assert.deepEqual((parts.tokenizerJson.model as { merges: unknown }).merges, [['a', 'b']]);
  assert.deepEqual(loadGgufTokenizer(readGguf(goodMerge)).encode('abba', { bos: false }), [6, 5, 4]);
});
