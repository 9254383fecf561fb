// Verify the hand-written tokenizer.json / chat template against SentencePiece.
//
// Usage (from the repository root, so that @huggingface/* resolve from node_modules):
//   node tools/train-demo/check_tokenizer.mjs models/demo tools/train-demo/work/tokenizer_tests.json
//
// Checks:
//  1. @huggingface/tokenizers encode(text, {add_special_tokens:false}).ids equals sentencepiece's
//     encode(text) for every case (held-out lines and documents, digits, non-ASCII, special tokens);
//  2. decode(ids) round-trips to the original text;
//  3. add_special_tokens:true prepends exactly one <bos> (id 2);
//  4. the chat template rendered with @huggingface/jinja equals the Python renderer used for the
//     training data, and tokenizes to the same ids; non-alternating roles raise.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';

const [dir, testsPath] = process.argv.slice(2);
if (!dir || !testsPath) {
  console.error('usage: node check_tokenizer.mjs <model dir> <tokenizer_tests.json>');
  process.exit(2);
}
const tokJson = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8'));
const tokCfg = JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8'));
const tests = JSON.parse(readFileSync(testsPath, 'utf8'));
const tok = new Tokenizer(tokJson, tokCfg);

let failures = 0;
const fail = (msg) => {
  failures++;
  if (failures <= 20) console.error('FAIL', msg);
};
const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

let nTokens = 0;
let nNonAscii = 0;
let nSpecial = 0;
let nDigits = 0;
for (const c of tests.cases) {
  const ids = tok.encode(c.text, { add_special_tokens: false }).ids;
  nTokens += ids.length;
  if (/[^\x00-\x7f]/.test(c.text)) nNonAscii++;
  if (/<(start|end)_of_turn>/.test(c.text)) nSpecial++;
  if (/[0-9]/.test(c.text)) nDigits++;
  if (!same(ids, c.ids)) {
    fail(`encode mismatch for ${JSON.stringify(c.text).slice(0, 200)}\n  js: ${ids.slice(0, 40)}\n  sp: ${c.ids.slice(0, 40)}`);
    continue;
  }
  // A literal U+2581 in the input decodes to a space (as with the real Gemma tokenizer and
  // sentencepiece itself), so round-trip is only required for texts without it.
  const back = ids.length ? tok.decode(ids, { skip_special_tokens: false }) : '';
  if (!c.text.includes('\u2581') && back !== c.text) fail(`decode mismatch: ${JSON.stringify(c.text).slice(0, 120)} -> ${JSON.stringify(back).slice(0, 120)}`);
  if (c.text.length > 0) {
    const withBos = tok.encode(c.text).ids;
    if (withBos[0] !== 2 || withBos[1] === 2 || !same(withBos.slice(1), ids)) fail(`add_special_tokens:true did not prepend one <bos>: ${JSON.stringify(c.text).slice(0, 80)}`);
  }
}
console.log(`encode/decode: ${tests.cases.length} cases, ${nTokens} tokens (${nNonAscii} non-ASCII, ${nDigits} with digits, ${nSpecial} with turn tokens)`);

// special token ids
const expectIds = { '<pad>': 0, '<eos>': 1, '<bos>': 2, '<unk>': 3, '<start_of_turn>': 4, '<end_of_turn>': 5, '<0x0A>': 16 };
for (const [t, id] of Object.entries(expectIds)) {
  if (tok.token_to_id(t) !== id) fail(`token_to_id(${t}) = ${tok.token_to_id(t)}, expected ${id}`);
}

// chat template
const tpl = new Template(tokCfg.chat_template);
for (const c of tests.chats) {
  const out = tpl.render({ messages: c.messages, bos_token: '<bos>', add_generation_prompt: c.add_generation_prompt });
  if (out !== c.expected) fail(`chat template render mismatch:\n${JSON.stringify(out)}\n${JSON.stringify(c.expected)}`);
  const ids = tok.encode(out, { add_special_tokens: false }).ids;
  if (!same(ids, c.ids)) fail(`chat ids mismatch: ${ids} vs ${c.ids}`);
}
for (const msgs of tests.bad_chats) {
  let threw = false;
  try {
    tpl.render({ messages: msgs, bos_token: '<bos>', add_generation_prompt: true });
  } catch {
    threw = true;
  }
  if (!threw) fail(`chat template accepted non-alternating roles: ${JSON.stringify(msgs)}`);
}
console.log(`chat template: ${tests.chats.length} renders, ${tests.bad_chats.length} rejections checked`);
console.log('example:', JSON.stringify(tpl.render({ messages: tests.chats[1].messages, bos_token: '<bos>', add_generation_prompt: true })));

if (failures) {
  console.error(`tokenizer check FAILED: ${failures} failure(s)`);
  process.exit(1);
}
console.log('tokenizer check OK');
