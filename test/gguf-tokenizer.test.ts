import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { GemmaTokenizer, type ChatMessage } from '../src/tokenizer/tokenizer.js';
import { ggufTokenizerParts, loadGgufTokenizer, mergesFromScores } from '../src/tokenizer/gguf-tokenizer.js';
import { exportGguf } from '../src/io/gguf-export.js';
import { gemma3GgufMetadata } from '../src/arch/gemma3/gguf.js';
import { tokenizerGgufMetadata } from '../src/io/gguf-model.js';
import type { Gemma3Config } from '../src/arch/config-types.js';
import { readGguf, readTensorBytes, writeGguf, kv, type GgufFile, type GgufMetadataEntry } from '../src/io/gguf.js';
import { resolveModelConfig } from '../src/arch/registry.js';
import { gemmaTokenizerFiles } from '../src/model/fixture.js';
import { loadModel } from '../src/runtime/load.js';
import { ReferenceBackend } from '../src/backend/reference/index.js';
import { LutraError } from '../src/util/errors.js';

const CLI = resolve('dist/src/cli/main.js');
const DEMO = resolve('models/demo');
const root = mkdtempSync(join(tmpdir(), 'lutra-ggtok-'));
test.after(() => rmSync(root, { recursive: true, force: true }));

function lutra(args: string[], input?: string) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', input });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Text that stresses a tokenizer: unicode, emoji, CJK, whitespace runs, control characters, special-token strings. */
const AWKWARD = [
  'héllo wörld — ünïcödé ñ ç ß ø å',
  'emoji 😀🎉👍🏽 and a family 👩‍👩‍👧 and flags 🇫🇷🇯🇵',
  '日本語のテキストです。中文文本。한국어 텍스트. ไทย العربية עברית',
  '   three leading spaces, and    runs     of   spaces   ',
  ' ',
  'tabs\tand\t\t\ttabs',
  'newlines\n\nand\n\n\n\nmore\r\nwindows line end\n',
  '\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n',
  'digits 0123456789 3.14159 1,000,000 2024-12-04 0x1F',
  '<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n',
  '<bos>text after a bos string',
  'special strings inside<eos>words<pad> and <unk> and <end_of_turn>',
  'partial <start_of_tur and end_of_turn> and <0x41> literally',
  'control \u0000\u0001\u0007 chars and \u00a0nbsp \u200b zero width \ufeff bom',
  'ligatures ﬁ ﬂ, fullwidth Ａ Ｂ, superscript ¹ ², fractions ½, combining e\u0301 a\u0308',
  'code: function f(x) { return x ** 2; } // comment\n\tif (a && b) { c(); }',
  '▁ a literal metaspace ▁▁ and underscores __init__',
  'x',
];

/** heldout-full.txt's lines (the first `maxLines`), bench/prompts.jsonl's prompts and AWKWARD. */
function corpus(maxLines = Infinity): string[] {
  const lines = readFileSync(join(DEMO, 'heldout-full.txt'), 'utf8').split('\n').filter((l) => l.length > 0).slice(0, maxLines);
  const prompts = readFileSync(resolve('bench/prompts.jsonl'), 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l).prompt as string);
  return [...lines, ...prompts, ...AWKWARD];
}

const TWO_TURNS: ChatMessage[] = [
  { role: 'system', content: 'Answer briefly.' },
  { role: 'user', content: 'What is the capital of France?' },
  { role: 'assistant', content: 'Paris.' },
  { role: 'user', content: 'And of Japan? 日本' },
];

/** Same ids as the HF tokenizer on every text, and decoding gives the text back. */
function assertSameTokenization(gguf: GemmaTokenizer, hf: GemmaTokenizer, texts: string[]): number {
  let tokens = 0;
  for (const t of texts) {
    const want = hf.encode(t);
    const got = gguf.encode(t);
    assert.deepEqual(got, want, `ids differ for ${JSON.stringify(t.slice(0, 80))}`);
    assert.equal(got.filter((id) => id === gguf.bosId).length, 1, `one <bos> for ${JSON.stringify(t.slice(0, 80))}`);
    assert.equal(gguf.decode(got), hf.decode(want));
    // Decoding gives the text back, except where Gemma's tokenizer itself does not: a literal ▁
    // decodes as a space, and the byte-fallback decoder drops a BOM (both as tokenizer.json does).
    if (!/[▁\ufeff]/.test(t)) assert.equal(gguf.decode(gguf.encode(t, { bos: false }), false), t, `round trip of ${JSON.stringify(t.slice(0, 80))}`);
    tokens += got.length;
  }
  return tokens;
}

/** The metadata of a GGUF as entries for writeGguf, so a test can edit and rewrite it. */
function entriesOf(f: GgufFile): GgufMetadataEntry[] {
  return [...f.metadata].map(([key, value]) => {
    const t = f.metadataTypes.get(key)!;
    return (t.type === 'array' ? { key, type: 'array', itemType: t.itemType, value } : { key, type: t.type, value }) as GgufMetadataEntry;
  });
}

/** Rewrite a GGUF with edited metadata and the same tensors. */
async function rewriteGguf(src: string, out: string, edit: (m: GgufMetadataEntry[]) => GgufMetadataEntry[]): Promise<void> {
  const f = readGguf(src);
  const tensors = f.tensors.map((t) => ({ name: t.name, shape: t.shape, type: t.type as never, nbytes: t.nbytes, data: () => readTensorBytes(f, t) }));
  await writeGguf(out, edit(entriesOf(f)), tensors);
}

const demoGguf = join(root, 'demo-f32.gguf');
let exported: Promise<void> | null = null;
/** models/demo exported to an F32 GGUF, once. */
function demoGgufReady(): Promise<void> {
  return (exported ??= exportGguf({ model: DEMO, out: demoGguf, type: 'f32' }));
}

test('a package converted from the demo GGUF gets its tokenizer: it encodes the corpus as the original tokenizer.json does', async () => {
  await demoGgufReady();
  const pkg = join(root, 'demo-from-gguf');
  const r = lutra(['convert', '--model', demoGguf, '--out', pkg, '--quant', 'all=int8:32']);
  assert.equal(r.code, 0, r.stderr);
  const eos = [1, 5];
  const fromPkg = GemmaTokenizer.load(pkg, eos);
  const hf = GemmaTokenizer.load(DEMO, eos);
  for (const text of corpus().slice(0, 200)) assert.deepEqual(fromPkg.encode(text), hf.encode(text), text);
  const chat = [{ role: 'user' as const, content: 'Tell me a fortune.' }];
  assert.deepEqual(fromPkg.encodeChat(chat, true), hf.encodeChat(chat, true));
});

test('demo model GGUF: the tokenizer from its metadata encodes the corpus exactly as tokenizer.json does', async (t) => {
  await demoGgufReady();
  const eos = [1, 5];
  const t0 = performance.now();
  const gguf = loadGgufTokenizer(readGguf(demoGguf), eos);
  t.diagnostic(`read the GGUF and built the 8192-token tokenizer in ${(performance.now() - t0).toFixed(0)} ms`);
  const hf = GemmaTokenizer.load(DEMO, eos);
  const texts = corpus();
  const tokens = assertSameTokenization(gguf, hf, texts);
  t.diagnostic(`${texts.length} texts, ${tokens} tokens, identical ids`);
  assert.equal(gguf.bosId, hf.bosId);
  assert.deepEqual([...gguf.stopIds].sort(), [...hf.stopIds].sort());
  for (const s of ['<bos>', '<eos>', '<start_of_turn>', '<end_of_turn>', '<0x41>', '▁the']) assert.equal(gguf.tokenId(s), hf.tokenId(s), s);
});

test('demo model GGUF: the chat template from tokenizer.chat_template renders the same ids', async () => {
  await demoGgufReady();
  const gguf = loadGgufTokenizer(readGguf(demoGguf), [1, 5]);
  const hf = GemmaTokenizer.load(DEMO, [1, 5]);
  assert.ok(gguf.hasChatTemplate);
  assert.equal(gguf.renderChat(TWO_TURNS), hf.renderChat(TWO_TURNS));
  const ids = gguf.encodeChat(TWO_TURNS);
  assert.deepEqual(ids, hf.encodeChat(TWO_TURNS));
  assert.equal(ids.filter((i) => i === gguf.bosId).length, 1);
  assert.deepEqual(gguf.encodeChat(TWO_TURNS.slice(0, 2), false), hf.encodeChat(TWO_TURNS.slice(0, 2), false));
});

test('the real Gemma 3 vocabulary (262 144 tokens) through GGUF metadata: same ids and chat ids as its tokenizer.json', async (t) => {
  const files = gemmaTokenizerFiles();
  const tokJson = JSON.parse(readFileSync(files.tokenizer, 'utf8'));
  const tokCfg = JSON.parse(readFileSync(files.config, 'utf8'));
  const cfg = resolveModelConfig({ model_type: 'gemma3_text', hidden_size: 64, num_hidden_layers: 2, head_dim: 16, vocab_size: 262144 }) as Gemma3Config;
  const path = join(root, 'gemma3-vocab.gguf');
  await writeGguf(path, [...gemma3GgufMetadata(cfg, 'gemma3-vocab', 0), ...tokenizerGgufMetadata(cfg, tokJson, tokCfg)], []);
  const t0 = performance.now();
  const gguf = loadGgufTokenizer(readGguf(path), [1, 106]);
  t.diagnostic(`read the GGUF and built the 262144-token tokenizer in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const dir = join(root, 'gemma3-tok');
  mkdirSync(dir);
  copyFileSync(files.tokenizer, join(dir, 'tokenizer.json'));
  copyFileSync(files.config, join(dir, 'tokenizer_config.json'));
  const hf = GemmaTokenizer.load(dir, [1, 106]);
  const texts = corpus(1500);
  const tokens = assertSameTokenization(gguf, hf, texts);
  t.diagnostic(`${texts.length} texts, ${tokens} tokens, identical ids`);
  assert.deepEqual(gguf.encode('Hello world, what is the capital of France?'), [2, 9259, 1902, 236764, 1144, 563, 506, 5279, 529, 7001, 236881]);
  assert.deepEqual(gguf.encodeChat(TWO_TURNS), hf.encodeChat(TWO_TURNS));
  assert.deepEqual([...gguf.stopIds].sort(), [...hf.stopIds].sort());
});

test('merges follow the scores: higher-scored pieces first, then longer left parts, then piece id', () => {
  const tokens = ['a', 'b', 'c', 'ab', 'bc', 'bca', 'abc', 'ca'];
  const scores = [0, 0, 0, -1, -2, -3, -3, -0.5];
  const ids = new Map(tokens.map((p, i) => [p, i]));
  assert.deepEqual(mergesFromScores(tokens, scores, ids), [
    ['c', 'a'],
    ['a', 'b'],
    ['b', 'c'],
    // Equal scores: all two-character left parts first, then by piece id.
    ['bc', 'a'],
    ['ab', 'c'],
    ['b', 'ca'],
    ['a', 'bc'],
  ]);
  // Splits fall on code points, never inside a surrogate pair.
  const emoji = ['😀', '😀😀', 'x'];
  assert.deepEqual(mergesFromScores(emoji, [0, -1, 0], new Map(emoji.map((p, i) => [p, i]))), [['😀', '😀']]);
});

test('an int8:32 package and its Q8_0 GGUF generate the same greedy tokens; chat runs on the GGUF', () => {
  const pkg = join(root, 'P');
  const gguf = join(root, 'X.gguf');
  const c = lutra(['convert', '--model', DEMO, '--out', pkg, '--quant', 'all=int8:32']);
  assert.equal(c.code, 0, c.stderr);
  const e = lutra(['export-gguf', '--model', pkg, '--out', gguf, '--type', 'q8_0']);
  assert.equal(e.code, 0, e.stderr);
  for (const args of [['--prompt', 'Once upon a time'], ['--prompt', 'The king said', '--raw']]) {
    const fromGguf = lutra(['generate', '--model', gguf, ...args, '--max-tokens', '16']);
    assert.equal(fromGguf.code, 0, fromGguf.stderr);
    assert.match(fromGguf.stderr, /generated 16 tokens|stopped by/);
    const fromPkg = lutra(['generate', '--model', pkg, ...args, '--max-tokens', '16']);
    assert.equal(fromPkg.code, 0, fromPkg.stderr);
    assert.ok(fromPkg.stdout.trim().length > 0);
    assert.equal(fromGguf.stdout, fromPkg.stdout);
  }
  const input = 'Hello, who are you?\nTell me about the sea.\n';
  const chatGguf = lutra(['chat', '--model', gguf, '--max-tokens', '12'], input);
  assert.equal(chatGguf.code, 0, chatGguf.stderr);
  const chatPkg = lutra(['chat', '--model', pkg, '--max-tokens', '12'], input);
  assert.equal(chatPkg.code, 0, chatPkg.stderr);
  assert.equal(chatGguf.stdout.replace(gguf, 'M'), chatPkg.stdout.replace(pkg, 'M'));
  assert.equal(chatGguf.stdout.split('\n> ').length - 1, 2, `two answers:\n${chatGguf.stdout}`);
});

test('a hand-made SentencePiece vocabulary: merges from its scores, byte fallback, a "__proto__" piece, eot as a stop', async () => {
  const special = ['<pad>', '<eos>', '<bos>', '<unk>', '<end_of_turn>'];
  const bytes = Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
  const chars = ['▁', '_', 'p', 'r', 'o', 't', 'a'];
  const merged = ['__', 'pr', 'to', 'pro', 'proto', '__proto', '__proto__', '▁a'];
  const tokens = [...special, ...bytes, ...chars, ...merged];
  const scores = [...special.map(() => 0), ...bytes.map(() => 0), ...chars.map((_, i) => -100 - i), ...merged.map((_, i) => -1 - i)];
  const types = [3, 3, 3, 2, 3, ...bytes.map(() => 6), ...chars.map(() => 1), ...merged.map(() => 1)]; // control, unknown, byte, normal
  const path = join(root, 'hand-made.gguf');
  await writeGguf(path, [
    kv.str('tokenizer.ggml.model', 'llama'),
    kv.arr.str('tokenizer.ggml.tokens', tokens),
    kv.arr.f32('tokenizer.ggml.scores', scores),
    kv.arr.i32('tokenizer.ggml.token_type', types),
    kv.u32('tokenizer.ggml.bos_token_id', 2),
    kv.u32('tokenizer.ggml.eos_token_id', 1),
    kv.u32('tokenizer.ggml.eot_token_id', 4),
  ], []);
  const tok = loadGgufTokenizer(readGguf(path));
  const id = (p: string) => tokens.indexOf(p);
  assert.equal(tok.tokenId('__proto__'), id('__proto__'));
  assert.deepEqual(tok.encode('__proto__'), [2, id('__proto__')]);
  // "x" is not a piece: its UTF-8 byte; "é" is two bytes; " a" is ▁a.
  assert.deepEqual(tok.encode('__proto x é a', { bos: false }), [id('__proto'), id('▁'), id('<0x78>'), id('▁'), id('<0xC3>'), id('<0xA9>'), id('▁a')]);
  assert.equal(tok.decode(tok.encode('__proto x é a')), '__proto x é a');
  assert.deepEqual([...tok.stopIds].sort(), [1, 4]);
  assert.equal(tok.hasChatTemplate, false);
  assert.throws(() => tok.renderChat([{ role: 'user', content: 'hi' }]), /hand-made\.gguf: the tokenizer has no chat template/);
});

/** A failing command prints exactly one line on stderr, naming what was wrong. */
function assertOneLineError(r: ReturnType<typeof lutra>, pattern: RegExp) {
  assert.equal(r.code, 1, `exit code; stderr: ${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `expected one line, got:\n${r.stderr}`);
  assert.match(lines[0]!, /^lutra: error: /);
  assert.match(lines[0]!, pattern);
}

test('a GGUF without a tokenizer, or with another tokenizer model, is a one-line error naming the file and key', async () => {
  await demoGgufReady();
  const noTok = join(root, 'no-tokenizer.gguf');
  await rewriteGguf(demoGguf, noTok, (m) => m.filter((e) => !e.key.startsWith('tokenizer.')));
  // Converted, it makes a package without a tokenizer: a warning, then generate names the fix.
  const pkg = join(root, 'no-tokenizer-pkg');
  const c = lutra(['convert', '--model', noTok, '--out', pkg]);
  assert.equal(c.code, 0, c.stderr);
  assert.match(c.stderr, /warning: .*no-tokenizer-pkg has no tokenizer.*--tokenizer DIR/);
  assertOneLineError(lutra(['generate', '--model', pkg, '--prompt', 'hi']), /no-tokenizer-pkg\/tokenizer\.json: missing; .*--tokenizer DIR\)$/);
  assertOneLineError(lutra(['generate', '--model', noTok, '--prompt', 'hi']), /no-tokenizer\.gguf: no tokenizer in the GGUF \(metadata "tokenizer\.ggml\.tokens" is missing\); .*lutra convert .*--tokenizer/);
  assertOneLineError(lutra(['chat', '--model', noTok], 'hi\n'), /no-tokenizer\.gguf: .*tokenizer\.ggml\.tokens/);
  // An explicit tokenizer folder supplies what the GGUF lacks.
  const withDir = loadModel(noTok, new ReferenceBackend(), { tokenizerDir: DEMO });
  assert.deepEqual(withDir.tokenizer!.encode('Once upon a time'), GemmaTokenizer.load(DEMO).encode('Once upon a time'));

  const gpt2 = join(root, 'gpt2-tokenizer.gguf');
  await rewriteGguf(demoGguf, gpt2, (m) => m.map((e) => (e.key === 'tokenizer.ggml.model' ? kv.str(e.key, 'gpt2') : e)));
  assertOneLineError(lutra(['generate', '--model', gpt2, '--prompt', 'hi']), /gpt2-tokenizer\.gguf: tokenizer\.ggml\.model is "gpt2"; lutra rebuilds only SentencePiece-style \("llama"\)/);

  // Inconsistent arrays name the key.
  const f = readGguf(demoGguf);
  const edit = async (name: string, fn: (m: GgufMetadataEntry[]) => GgufMetadataEntry[]) => {
    const p = join(root, name);
    await writeGguf(p, fn(entriesOf(f)), []);
    return readGguf(p);
  };
  const noScores = await edit('no-scores.gguf', (m) => m.filter((e) => e.key !== 'tokenizer.ggml.scores'));
  assert.throws(() => ggufTokenizerParts(noScores), (e: unknown) => e instanceof LutraError && /no-scores\.gguf: metadata "tokenizer\.ggml\.scores" is missing/.test(e.message));
  const nanScore = await edit('nan-score.gguf', (m) => m.map((e) => (e.key === 'tokenizer.ggml.scores' ? kv.arr.f32(e.key, Float32Array.from(e.value as Float32Array, (x, i) => (i === 42 ? NaN : x))) : e)));
  assert.throws(() => ggufTokenizerParts(nanScore), /nan-score\.gguf: tokenizer\.ggml\.scores\[42\] is NaN; expected a finite number/);
  const shortTypes = await edit('short-types.gguf', (m) => m.map((e) => (e.key === 'tokenizer.ggml.token_type' ? kv.arr.i32(e.key, [1, 1, 1]) : e)));
  assert.throws(() => ggufTokenizerParts(shortTypes), /short-types\.gguf: tokenizer\.ggml\.token_type must be 8192 integers/);
  const badBos = await edit('bad-bos.gguf', (m) => m.map((e) => (e.key === 'tokenizer.ggml.bos_token_id' ? kv.u32(e.key, 9000) : e)));
  assert.throws(() => ggufTokenizerParts(badBos), /bad-bos\.gguf: tokenizer\.ggml\.bos_token_id is 9000; expected a token id below 8192/);
  const pieces = f.metadata.get('tokenizer.ggml.tokens') as string[];
  const dup = await edit('dup.gguf', (m) => m.map((e) => (e.key === 'tokenizer.ggml.tokens' ? kv.arr.str(e.key, pieces.map((p, i) => (i === 300 ? pieces[200]! : p))) : e)));
  const dupMessage = `dup.gguf: tokenizer.ggml.tokens has ${JSON.stringify(pieces[200])} at ids 200 and 300; token strings must be unique`;
  assert.throws(() => ggufTokenizerParts(dup), (e: unknown) => e instanceof LutraError && e.message.endsWith(dupMessage));
  assert.throws(() => ggufTokenizerParts(f, 100), /demo-f32\.gguf: tokenizer\.ggml\.tokens has 8192 tokens but token_embd\.weight has only 100 rows/);
  // Nothing was written next to the inputs besides the test's own files.
  assert.ok(readdirSync(root).every((n) => !n.startsWith('.')), readdirSync(root).join(', '));
});
