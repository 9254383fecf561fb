// Damaged inputs, one case per class, each through the CLI as a child process: every one must end
// with exit code 1 and a single `lutra: error:` line naming the culprit. The damaged models are
// made from one tiny fixture (and two packages converted from it) by editing config.json,
// rewriting a safetensors header or poking bytes into a tensor, in a temporary folder.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, copyFileSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import YAML from 'yaml';
import { GgufType, ggufTensorBytes, kv, writeGguf } from '../src/io/gguf.js';

const CLI = resolve('dist/src/cli/main.js');
const root = mkdtempSync(join(tmpdir(), 'lutra-bad-'));
const F = join(root, 'F'); // the tiny fixture (bf16 checkpoint)
const PA = join(root, 'PA'); // package: embed/lm head int4:32, attention f32, FFN lut4:8
const PB = join(root, 'PB'); // package: attention f16
const SHARD = 'model-00001-of-00001.safetensors';

function lutra(...args: string[]) {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', input: 'hello\n', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, seconds: (performance.now() - t0) / 1000 };
}

/** A failing command must print exactly one line on stderr, naming what was wrong. */
function assertOneLineError(r: ReturnType<typeof lutra>, pattern: RegExp) {
  assert.equal(r.code, 1, `exit code; stderr: ${r.stderr}`);
  // A command that got as far as loading the model has said so first (on a terminal that line is erased).
  const lines = r.stderr.trim().split('\n').filter((l, i) => !(i === 0 && /^(bench: )?loading .*\.\.\.$|^bench: loading$/.test(l)));
  assert.equal(lines.length, 1, `expected one error line, got:\n${r.stderr}`);
  assert.match(lines[0], /^lutra: error: /);
  assert.doesNotMatch(lines[0], /internal error|\s+at .*:\d+:\d+/);
  assert.match(lines[0], pattern);
}

// ---- building damaged inputs ---------------------------------------------------------------

let serial = 0;
/** A new folder holding links to every file of `from` except `own` (which the caller writes). */
function variant(from: string, own: string[] = []): string {
  const dir = join(root, `v${serial++}`);
  mkdirSync(dir);
  for (const f of readdirSync(from)) if (!own.includes(f)) symlinkSync(join(from, f), join(dir, f));
  return dir;
}

/** The fixture with config.json edited. */
function withConfig(edit: (c: Record<string, unknown>) => void): string {
  const dir = variant(F, ['config.json']);
  const cfg = JSON.parse(readFileSync(join(F, 'config.json'), 'utf8'));
  edit(cfg);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg, null, 1));
  return dir;
}

type Header = Record<string, any>;

function readSafetensors(path: string): { header: Header; data: Buffer } {
  const b = readFileSync(path);
  const n = Number(b.readBigUInt64LE(0));
  return { header: JSON.parse(b.subarray(8, 8 + n).toString('utf8')), data: b.subarray(8 + n) };
}

/** Write `header` (any JSON) and `data` as a safetensors file. */
function writeSafetensorsRaw(path: string, header: Header, data: Buffer) {
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  writeFileSync(path, Buffer.concat([len, Buffer.from(json, 'utf8'), data]));
}

/** A copy of model folder `from` whose shard `file` has its header JSON edited (data unchanged). */
function withHeader(from: string, file: string, edit: (h: Header) => void): string {
  const dir = variant(from, [file]);
  const { header, data } = readSafetensors(join(from, file));
  edit(header);
  writeSafetensorsRaw(join(dir, file), header, data);
  return dir;
}

/** A copy of model folder `from` with `bytes` written over tensor `tensor` of shard `file` at byte `at`. */
function withBytes(from: string, file: string, tensor: string, pokes: [at: number, bytes: number[]][]): string {
  const dir = variant(from, [file]);
  copyFileSync(join(from, file), join(dir, file));
  const b = readFileSync(join(from, file));
  const n = Number(b.readBigUInt64LE(0));
  const entry = JSON.parse(b.subarray(8, 8 + n).toString('utf8'))[tensor];
  assert.ok(entry, `no tensor ${tensor} in ${file}`);
  const fd = openSync(join(dir, file), 'r+');
  for (const [at, bytes] of pokes) writeSync(fd, Buffer.from(bytes), 0, bytes.length, 8 + n + entry.data_offsets[0] + at);
  closeSync(fd);
  return dir;
}

/** A package whose meta.yaml is edited (parsed and written back). */
function withMeta(from: string, edit: (m: any) => void): string {
  const dir = variant(from, ['meta.yaml']);
  const meta = YAML.parse(readFileSync(join(from, 'meta.yaml'), 'utf8'));
  edit(meta);
  writeFileSync(join(dir, 'meta.yaml'), YAML.stringify(meta));
  return dir;
}

/** A package part stored one value short: its header shape and end offset shrink by one element. */
function shortPart(part: string, bytesPerValue: number): string {
  return withHeader(PA, SHARD, (h) => {
    h[part].shape = [h[part].shape[0] - 1];
    h[part].data_offsets[1] -= bytesPerValue;
  });
}

const LAYER0_K = 'model.layers.0.self_attn.k_proj.weight';
const LAYER0_V = 'model.layers.0.self_attn.v_proj.weight';
const UP3 = 'model.layers.3.mlp.up_proj.weight';
const gen = (model: string, ...more: string[]) => ['generate', '--model', model, '--prompt', 'Hello', '--max-tokens', '2', ...more];

before(() => {
  for (const args of [
    ['fixture', '--out', F],
    ['convert', '--model', F, '--out', PA, '--quant', 'all=int4:32', '--quant', 'attn=f32', '--quant', 'ffn=lut4:8'],
    ['convert', '--model', F, '--out', PB, '--quant', 'attn=f16'],
  ]) {
    const r = lutra(...args);
    assert.equal(r.code, 0, r.stderr);
  }
});

after(() => rmSync(root, { recursive: true, force: true }));

interface Case {
  what: string;
  args: () => string[] | Promise<string[]>;
  error: RegExp;
  /** Wall-clock bound for cases that used to hang or abort. */
  maxSeconds?: number;
}

const CASES: Case[] = [
  // --- model folders and config.json ---
  { what: 'a file instead of a folder', args: () => gen(join(F, 'config.json')), error: /F\/config\.json: is a file; expected a model folder/ },
  {
    what: 'config.json that is not JSON',
    args: () => {
      const d = variant(F, ['config.json']);
      writeFileSync(join(d, 'config.json'), '{"model_type": "gemma3_text",');
      return gen(d);
    },
    error: /config\.json: the model config is not a JSON object/,
  },
  { what: 'a zero size', args: () => gen(withConfig((c) => (c.hidden_size = 0))), error: /config\.json: hidden_size is 0; expected an integer in \[1, 65536\]/ },
  { what: 'a negative size', args: () => gen(withConfig((c) => (c.num_key_value_heads = -2))), error: /config\.json: num_key_value_heads is -2; expected an integer/ },
  { what: 'a huge size', args: () => gen(withConfig((c) => (c.vocab_size = 1e12))), error: /config\.json: vocab_size is 1000000000000; expected an integer in \[1, 4194304\]/ },
  {
    what: 'num_hidden_layers: 1e9 fails fast',
    args: () => gen(withConfig((c) => { c.num_hidden_layers = 1e9; delete c.layer_types; })),
    error: /config\.json: num_hidden_layers is 1000000000; expected an integer in \[1, 1024\]/,
    maxSeconds: 5,
  },
  {
    what: 'one layer more than the weights hold',
    args: () => gen(withConfig((c) => { c.num_hidden_layers = 9; delete c.layer_types; })),
    error: /model\.safetensors: tensor "model\.layers\.8\.input_layernorm\.weight" is missing; config\.json implies it \(num_hidden_layers = 9/,
  },
  {
    what: 'a size that disagrees with the tensors',
    args: () => gen(withConfig((c) => (c.head_dim = 32))),
    error: /tensor "model\.layers\.0\.self_attn\.q_proj\.weight" has shape \[64,64\], expected \[128,64\] from config\.json \(.*num_attention_heads × head_dim = 4 × 32/,
  },
  { what: 'rms_norm_eps: -1', args: () => gen(withConfig((c) => (c.rms_norm_eps = -1))), error: /config\.json: rms_norm_eps is -1; expected a finite number > 0/ },
  {
    what: 'sliding_window_pattern: 0',
    args: () => gen(withConfig((c) => { c.sliding_window_pattern = 0; delete c.layer_types; })),
    error: /config\.json: sliding_window_pattern is 0; expected an integer ≥ 1/,
  },
  { what: 'hidden_activation: "gelu"', args: () => gen(withConfig((c) => (c.hidden_activation = 'gelu'))), error: /config\.json: hidden_activation "gelu" is the exact erf GELU; lutra implements gelu_pytorch_tanh only/ },
  { what: 'final_logit_softcapping: 0', args: () => gen(withConfig((c) => (c.final_logit_softcapping = 0))), error: /config\.json: final_logit_softcapping is 0; expected null or a number > 0/ },
  { what: 'a token id outside the vocabulary', args: () => gen(withConfig((c) => (c.bos_token_id = 262144))), error: /config\.json: bos_token_id is 262144; expected an integer in \[0, 262143\]/ },

  // --- safetensors headers ---
  {
    what: 'negative data_offsets',
    args: () => gen(withHeader(F, 'model.safetensors', (h) => (h[LAYER0_K].data_offsets = [-4096, 0]))),
    error: /model\.safetensors: tensor "model\.layers\.0\.self_attn\.k_proj\.weight": data_offsets \[-4096,0\]; expected \[begin, end\], two non-negative integers/,
  },
  {
    what: 'data_offsets overlapping another tensor',
    args: () => gen(withHeader(F, 'model.safetensors', (h) => (h[LAYER0_V].data_offsets = [...h[LAYER0_K].data_offsets]))),
    error: /model\.safetensors: tensor "model\.layers\.0\.self_attn\.[kv]_proj\.weight": data_offsets \[\d+, \d+\] overlap tensor "model\.layers\.0\.self_attn\.[kv]_proj\.weight"/,
  },
  {
    what: 'string data_offsets',
    args: () => gen(withHeader(F, 'model.safetensors', (h) => (h[LAYER0_K].data_offsets = h[LAYER0_K].data_offsets.map(String)))),
    error: /tensor "model\.layers\.0\.self_attn\.k_proj\.weight": data_offsets \["\d+","\d+"\]; expected \[begin, end\]/,
  },
  {
    what: 'missing data_offsets',
    args: () => gen(withHeader(F, 'model.safetensors', (h) => delete h[LAYER0_K].data_offsets)),
    error: /tensor "model\.layers\.0\.self_attn\.k_proj\.weight": data_offsets is missing; expected \[begin, end\]/,
  },
  {
    what: 'missing shape',
    args: () => gen(withHeader(F, 'model.safetensors', (h) => delete h[LAYER0_K].shape)),
    error: /tensor "model\.layers\.0\.self_attn\.k_proj\.weight": shape is missing; expected an array of non-negative integers/,
  },
  {
    what: 'an unknown dtype',
    args: () => gen(withHeader(F, 'model.safetensors', (h) => (h[LAYER0_K].dtype = 'F8_E4M3'))),
    error: /tensor "model\.layers\.0\.self_attn\.k_proj\.weight": dtype "F8_E4M3"; expected F32, F16, BF16, I8 or U8/,
  },

  // --- non-finite weights ---
  {
    what: 'NaN and Inf in a bf16 checkpoint weight',
    args: () => gen(withBytes(F, 'model.safetensors', UP3, [[0, [0xc0, 0x7f]], [100, [0xc1, 0xff]], [2000, [0x80, 0xff]]])),
    error: /model\.safetensors: tensor "model\.layers\.3\.mlp\.up_proj\.weight" holds 2 NaN and 1 infinite values/,
  },
  {
    what: 'NaN weights let through with --no-check-weights stop at the first non-finite logits',
    args: () => gen(withBytes(F, 'model.safetensors', 'model.norm.weight', [[0, [0xc0, 0x7f]]]), '--no-check-weights'),
    error: /non-finite logits at position \d+ \(token \d+ is NaN\)/,
  },
  {
    what: 'convert refuses a source with NaN weights',
    args: () => ['convert', '--model', withBytes(F, 'model.safetensors', UP3, [[64, [0xc0, 0x7f]]]), '--out', join(root, 'never'), '--quant', 'ffn=int8:32'],
    error: /model\.safetensors: tensor "model\.layers\.3\.mlp\.up_proj\.weight" holds 1 NaN and 0 infinite values/,
  },
  {
    what: 'NaN in an f32 package weight',
    args: () => gen(withBytes(PA, SHARD, 'model.layers.1.self_attn.q_proj.weight', [[40, [0, 0, 0xc0, 0x7f]]])),
    error: /model-00001-of-00001\.safetensors: tensor "model\.layers\.1\.self_attn\.q_proj\.weight" holds 1 NaN and 0 infinite values/,
  },
  {
    what: 'Inf in an f16 package weight',
    args: () => gen(withBytes(PB, SHARD, 'model.layers.2.self_attn.o_proj.weight', [[8, [0x00, 0x7c]]])),
    error: /model-00001-of-00001\.safetensors: tensor "model\.layers\.2\.self_attn\.o_proj\.weight" holds 0 NaN and 1 infinite values/,
  },
  {
    what: 'Inf in the quantization scales of a package',
    args: () => gen(withBytes(PA, SHARD, 'model.embed_tokens.weight.scales', [[2, [0x00, 0xfc]]])),
    error: /tensor "model\.embed_tokens\.weight" holds 0 NaN and 1 infinite scales/,
  },

  // --- packages ---
  { what: 'a package without meta.yaml', args: () => gen(variant(PA, ['meta.yaml'])), error: /meta\.yaml: missing, but .*model-00001-of-00001\.safetensors looks like a lutra package shard/ },
  {
    what: 'a package with corrupt meta.yaml',
    args: () => {
      const d = variant(PA, ['meta.yaml']);
      writeFileSync(join(d, 'meta.yaml'), 'format_version: 1\ntensors: [\n  {name: x\n');
      return gen(d);
    },
    error: /meta\.yaml: not readable YAML/,
  },
  {
    what: 'a meta.yaml tensor without a shape',
    args: () => gen(withMeta(PA, (m) => delete m.tensors[0].shape)),
    error: /meta\.yaml: tensor "[^"]+" has shape undefined; expected \[n\], \[rows, cols\] or \[experts, rows, cols\]/,
  },
  {
    what: 'a meta.yaml context_length that is not a number',
    args: () => gen(withMeta(PA, (m) => (m.context_length = 'banana'))),
    error: /meta\.yaml: context_length is "banana"; expected a whole number/,
  },
  {
    what: 'a meta.yaml quantization setting that is no format',
    args: () => gen(withMeta(PA, (m) => (m.quantization = { quant_attn: 'int7:32' }))),
    error: /meta\.yaml: quantization\.quant_attn: unknown format "int7:32"/,
  },
  {
    what: 'codes of the wrong length',
    args: () => gen(shortPart('model.embed_tokens.weight.codes', 1)),
    error: /tensor "model\.embed_tokens\.weight\.codes" is U8 \[8388607\]; int4:32 of \[262144,64\] \(meta\.yaml\) needs U8 with 8388608 values/,
  },
  {
    what: 'scales of the wrong length',
    args: () => gen(shortPart('model.embed_tokens.weight.scales', 2)),
    error: /tensor "model\.embed_tokens\.weight\.scales" is F16 \[524287\]; int4:32 of \[262144,64\] \(meta\.yaml\) needs F16 with 524288 values/,
  },
  {
    what: 'a LUT table of the wrong length',
    args: () => gen(withHeader(PA, SHARD, (h) => {
      const t = h['model.layers.0.mlp.up_proj.weight.table'];
      t.shape = [t.shape[0], t.shape[1] - 1];
      t.data_offsets[1] -= 2 * t.shape[0];
    })),
    error: /tensor "model\.layers\.0\.mlp\.up_proj\.weight\.table" is F16 \[24,15\]; lut4:8 of \[192,64\] \(meta\.yaml\) needs F16 with 384 values/,
  },

  // --- tokenizer and chat template ---
  {
    what: 'a corrupt tokenizer.json',
    args: () => {
      const d = variant(F, ['tokenizer.json']);
      writeFileSync(join(d, 'tokenizer.json'), '{"version": "1.0", "model": ');
      return gen(d);
    },
    error: /tokenizer\.json: the tokenizer is not a JSON object/,
  },
  {
    what: 'chat on a model without a chat template',
    args: () => {
      const d = variant(F, ['tokenizer_config.json']);
      const cfg = JSON.parse(readFileSync(join(F, 'tokenizer_config.json'), 'utf8'));
      delete cfg.chat_template;
      writeFileSync(join(d, 'tokenizer_config.json'), JSON.stringify(cfg));
      return ['chat', '--model', d];
    },
    error: /: the tokenizer has no chat template; use lutra generate --raw/,
  },
  {
    what: 'a chat template that does not parse',
    args: () => {
      const d = variant(F);
      writeFileSync(join(d, 'chat_template.jinja'), '{% for m in messages %}{{ m.content }');
      return ['chat', '--model', d];
    },
    error: /chat_template\.jinja: the chat template does not parse \(.*\); fix it, or give the model raw prompts/,
  },

  // --- GGUF files ---
  {
    what: 'a GGUF of another architecture',
    args: async () => {
      const path = join(root, 'llama.gguf');
      const shape = [8, 32];
      await writeGguf(path, [kv.str('general.architecture', 'llama'), kv.u32('llama.block_count', 1)], [
        { name: 'token_embd.weight', shape, type: GgufType.F32, nbytes: ggufTensorBytes(GgufType.F32, shape), data: () => new Uint8Array(ggufTensorBytes(GgufType.F32, shape)) },
      ]);
      return gen(path);
    },
    error: /llama\.gguf: general\.architecture is "llama"; lutra reads gemma3 and gemma4 GGUF files/,
  },
  {
    what: 'a K-quant GGUF',
    args: async () => {
      const path = join(root, 'q4k.gguf');
      const shape = [8, 256];
      await writeGguf(path, [kv.str('general.architecture', 'gemma3')], [
        { name: 'token_embd.weight', shape, type: GgufType.Q4_K, nbytes: ggufTensorBytes(GgufType.Q4_K, shape), data: () => new Uint8Array(ggufTensorBytes(GgufType.Q4_K, shape)) },
      ]);
      return ['convert', '--model', path, '--out', join(root, 'never')];
    },
    error: /q4k\.gguf: tensor "token_embd\.weight" \(model\.embed_tokens\.weight\) has type Q4_K, which lutra cannot read/,
  },

  // --- convert ---
  {
    what: 'a quantization block that does not divide a tensor',
    args: () => ['convert', '--model', F, '--out', join(root, 'never'), '--quant', 'ffn=int4:48'],
    error: /--quant ffn=int4:48: int4:48 does not fit tensor "model\.layers\.0\.mlp\.gate_proj\.weight" \[192,64\] .*: its 64 columns are not a multiple of the block size 48/,
  },
  {
    what: 'a LUT group that does not divide a tensor',
    args: () => ['convert', '--model', F, '--out', join(root, 'never'), '--lut2', '4,5'],
    error: /--lut2 4,5: lut4:5 does not fit tensor "model\.layers\.0\.self_attn\.q_proj\.weight" \[64,64\] .*: its 64 rows are not a multiple of the group size 5/,
  },
  { what: 'bench --llama-threads -1', args: () => ['bench', '--model', F, '--vs-llama-cpp', '--llama-threads', '-1'], error: /--llama-threads -1: expected thread counts like 1,2/ },
  { what: 'convert --weight-threshold -1', args: () => ['convert', '--model', F, '--out', join(root, 'never'), '--weight-threshold', '-1'], error: /--weight-threshold "-1": expected an integer ≥ 0/ },

  // --- outputs that exist (replacing them, and two runs into one --out, are in faults.test.ts) ---
  { what: 'convert into an existing --out', args: () => ['convert', '--model', F, '--out', F], error: /--out .*: already exists; choose a new path or pass --force to replace it/ },
  {
    what: 'export-gguf onto an existing --out',
    args: () => ['export-gguf', '--model', F, '--out', join(F, 'config.json')],
    error: /--out .*config\.json: already exists; choose a new path or pass --force to replace it/,
  },

  // --- a prompt longer than the context ---
  {
    what: 'a prompt longer than --context',
    args: () => ['generate', '--model', F, '--context', '8', '--raw', '--prompt', 'one two three four five six seven eight nine ten eleven twelve'],
    error: /--prompt is \d+ tokens but the context holds 8 \(--context\)/,
  },
];

/** Every numeric flag out of range, negatives included: [command args, flag, value, expected range text]. */
const FLAGS: [string[], string, string, string][] = [
  [gen('@F'), '--max-tokens', '0', 'an integer ≥ 1'],
  [gen('@F'), '--max-tokens', '-5', 'an integer ≥ 1'],
  [gen('@F'), '--temperature', '-0.5', 'a number ≥ 0'],
  [gen('@F'), '--top-k', '-1', 'an integer ≥ 0'],
  [gen('@F'), '--top-p', '1.5', 'a number in \\(0, 1\\]'],
  [gen('@F'), '--top-p', '0', 'a number in \\(0, 1\\]'],
  [gen('@F'), '--min-p', '-1', 'a number in \\[0, 1\\)'],
  [gen('@F'), '--min-p', '1', 'a number in \\[0, 1\\)'],
  [gen('@F'), '--repetition-penalty', '-1', 'a number > 0'],
  [gen('@F'), '--repetition-penalty', '0', 'a number > 0'],
  [gen('@F'), '--seed', '-1', 'an integer in \\[0, 4294967295\\]'],
  [gen('@F'), '--threads', '0', 'an integer in \\[1, 256\\]'],
  [gen('@F'), '--threads', '-2', 'an integer in \\[1, 256\\]'],
  [gen('@F'), '--context', '0', 'an integer in \\[2, 2048\\]'],
  [gen('@F'), '--context', '4096', 'an integer in \\[2, 2048\\]'],
  [gen('@F'), '--prefill-batch', '-4', 'an integer ≥ 1'],
  [['chat', '--model', '@F'], '--max-tokens', '-1', 'an integer ≥ 1'],
  [['fixture', '--out', '@F-never'], '--seed', '-3', 'an integer ≥ 0'],
  [['bench', '--model', '@F'], '--prefill', '0', 'an integer in \\[1, 1048576\\]'],
  [['bench', '--model', '@F'], '--decode', '-1', 'an integer in \\[1, 1048576\\]'],
  [['bench', '--model', '@F'], '--repeat', '0', 'an integer in \\[1, 100\\]'],
  [['bench', '--model', '@F'], '--probe-mib', '8', 'an integer in \\[16, 3072\\]'],
  [['bench', '--model', '@F'], '--prefill-batch', '0', 'an integer ≥ 1'],
  [['bench', '--model', '@F'], '--threads', '-1', 'an integer in \\[1, 256\\]'],
  [['compare', '@F', '--reference', '@F', '--prompt', 'hi'], '--max-tokens', '-3', 'an integer ≥ 1'],
  [['compare', '@F', '--reference', '@F', '--prompt', 'hi'], '--prefill-batch', '0', 'an integer ≥ 1'],
  [['compare', '@F', '--reference', '@F', '--prompt', 'hi'], '--llama-threads', '-1', 'an integer ≥ 1'],
  [['compare', '@F', '--reference', '@F', '--prompt', 'hi', '--layers'], '--layer-threshold', '-1.5', 'a number in \\[-1, 1\\]'],
];

for (const c of CASES) {
  test(`bad input: ${c.what}`, async () => {
    const r = lutra(...(await c.args()));
    assertOneLineError(r, c.error);
    const left = readdirSync(root).filter((f) => f.includes('tmp-'));
    assert.deepEqual(left, [], 'a failed command left temporary files');
    if (c.maxSeconds !== undefined) assert.ok(r.seconds < c.maxSeconds, `took ${r.seconds.toFixed(1)} s, expected < ${c.maxSeconds} s`);
  });
}

test('bad input: every numeric flag out of range, negatives included, gets its range', () => {
  for (const [args, flag, value, range] of FLAGS) {
    const full = [...args.map((a) => a.replace(/^@F/, F)), flag, value];
    const cmd = full[0];
    assertOneLineError(lutra(...full), new RegExp(`lutra ${cmd}: ${flag} "${value.replace('.', '\\.')}": expected ${range}$`));
  }
});

test('bad input: the damaged-input helpers change only what they say (the untouched fixture runs)', () => {
  const r = lutra(...gen(variant(F)));
  assert.equal(r.code, 0, r.stderr);
  const h = withHeader(F, 'model.safetensors', () => {});
  assert.equal(lutra(...gen(h)).code, 0);
});
