import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, copyFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GemmaTokenizer } from '../src/tokenizer/tokenizer.js';
import { gemmaTokenizerFiles } from '../src/model/fixture.js';

const root = mkdtempSync(join(tmpdir(), 'lutra-tok-'));
const files = gemmaTokenizerFiles();
copyFileSync(files.tokenizer, join(root, 'tokenizer.json'));
copyFileSync(files.config, join(root, 'tokenizer_config.json'));
const tok = GemmaTokenizer.load(root, [1]);

test('encodes like the reference Gemma 3 tokenizer, with one <bos>', () => {
  assert.deepEqual(tok.encode('Hello world, what is the capital of France?'), [2, 9259, 1902, 236764, 1144, 563, 506, 5279, 529, 7001, 236881]);
  // Text that already starts with <bos> does not get a second one.
  assert.deepEqual(tok.encode('<bos>Hello'), [2, 9259]);
  assert.equal(tok.decode(tok.encode('Hi there 👋 — ünïcödé  double  spaces')), 'Hi there 👋 — ünïcödé  double  spaces');
});

test('chat template folds the system text into the first user turn', () => {
  const text = tok.renderChat([
    { role: 'system', content: 'You are terse.' },
    { role: 'user', content: 'What is the capital of France?' },
  ]);
  assert.equal(text, '<bos><start_of_turn>user\nYou are terse.\n\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\n');
  const ids = tok.encodeChat([{ role: 'user', content: 'What is the capital of France?' }]);
  assert.deepEqual(ids, [2, 105, 2364, 107, 3689, 563, 506, 5279, 529, 7001, 236881, 106, 107, 105, 4368, 107]);
  assert.equal(ids.filter((i) => i === 2).length, 1);
});

test('stops on <eos> and <end_of_turn>; roles must alternate', () => {
  assert.ok(tok.stopIds.has(1));
  assert.ok(tok.stopIds.has(106));
  assert.throws(() => tok.renderChat([{ role: 'user', content: 'a' }, { role: 'user', content: 'b' }]), /alternate/);
});

test.after(() => rmSync(root, { recursive: true, force: true }));
