// Row readers: rows read from disk equal the rows of the whole tensor loaded and dequantized, bit
// for bit, in every stored format (checkpoint safetensors shards, lutra package, GGUF), for ids in
// any order with repeats; they outlive their source and close their descriptors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdirSync, mkdtempSync, openSync, readdirSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SafetensorsFile, writeSafetensors, type StDtype, type TensorToWrite } from '../src/io/safetensors.js';
import { Checkpoint } from '../src/io/checkpoint.js';
import { PackageSource, PACKAGE_FORMAT_VERSION, writePackage, type PackageMeta } from '../src/io/package.js';
import { GgufSource } from '../src/io/gguf-source.js';
import { encodeQ4_0, encodeQ8_0, GgufType, ggufTensorBytes, kv, writeGguf, type GgufTensorSpec } from '../src/io/gguf.js';
import { encodeTensor } from '../src/quant/convert.js';
import { dequantize } from '../src/backend/reference/index.js';
import { fixtureConfig, SHAPES } from '../src/model/fixture.js';
import { numel } from '../src/model/weight.js';
import { auxLayout, formatName, parseFormat, rowBytes } from '../src/model/formats.js';
import { f32ArrayToBf16, f32ArrayToF16 } from '../src/util/half.js';
import type { WeightSource } from '../src/model/forward.js';
import type { RowReader } from '../src/io/row-reader.js';

const root = mkdtempSync(join(tmpdir(), 'lutra-rows-'));
test.after(() => rmSync(root, { recursive: true, force: true }));

/** Deterministic values of mixed magnitude: mostly N(0, 1), some tiny (f16 subnormals), a few large. */
function values(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const uniform = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s + 0.5) / 2 ** 32;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const g = Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
    const u = uniform();
    out[i] = u < 0.05 ? g * 1e-6 : u < 0.08 ? g * 300 : g;
  }
  return out;
}

/** `n` ids in [0, rows): random with repeats, both ends, and a run of consecutive rows. */
function someIds(rows: number, n: number, seed: number): number[] {
  let s = seed >>> 0;
  const ids = [rows - 1, 0, rows - 1];
  for (let r = Math.floor(rows / 3); r < Math.min(rows, Math.floor(rows / 3) + 5); r++) ids.push(r);
  while (ids.length < n) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    ids.push(s % rows);
  }
  ids.push(ids[4], ids[7]);
  return ids;
}

function bytesOf(a: Float32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

function fdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

/** Every 2-D tensor of `src`: read rows (random ids, then all rows in order) and compare with dequantize(load). */
function checkAll(src: WeightSource, names: string[]): RowReader[] {
  const readers: RowReader[] = [];
  for (const name of names) {
    const r = src.rowReader!(name);
    readers.push(r);
    const [rows, cols] = src.shape(name);
    assert.equal(r.name, name);
    assert.equal(r.rows, rows, name);
    assert.equal(r.cols, cols, name);
    assert.deepEqual(r.format, src.format(name), name);
    const full = dequantize(src.load(name));
    checkRows(r, full, someIds(rows, 50, rows * 31 + cols), `${name} (${formatName(r.format)})`);
    checkRows(r, full, Array.from({ length: rows }, (_, i) => i), `${name} (${formatName(r.format)}), all rows`);
  }
  return readers;
}

function checkRows(r: RowReader, full: Float32Array, ids: number[], what: string): void {
  const cols = r.cols;
  const out = new Float32Array(ids.length * cols).fill(NaN);
  r.read(ids, out);
  const want = new Float32Array(ids.length * cols);
  ids.forEach((id, i) => want.set(full.subarray(id * cols, (id + 1) * cols), i * cols));
  assert.ok(bytesOf(out).equals(bytesOf(want)), `${what}: rows read from disk differ from the dequantized tensor`);
}

/** Readers keep working after their source closed, reject bad ids, and close their descriptors. */
function afterSourceClosed(src: WeightSource, readers: RowReader[], fdsBefore: number): void {
  const loaded = readers.map((r) => dequantize(src.load(r.name)));
  src.close();
  // Every part of these tensors sits in one file: one descriptor per reader, none left by the source.
  assert.equal(fdCount(), fdsBefore + readers.length, 'each reader holds one descriptor of its own');
  readers.forEach((r, i) => checkRows(r, loaded[i], someIds(r.rows, 20, 7 + i), `${r.name} after the source closed`));
  const r = readers[0];
  const out = new Float32Array(4 * r.cols);
  for (const bad of [r.rows, -1, 1.5, NaN, r.rows + 1000]) {
    assert.throws(
      () => r.read([0, bad], out),
      (e: Error) => e.name === 'LutraError' && e.message.includes(`tensor "${r.name}": row id ${bad} is out of range; valid ids are 0..${r.rows - 1}`),
      `id ${bad}`,
    );
  }
  assert.throws(() => r.read([0, 1, 2, 3, 4], out), /output holds/);
  r.read([], out);
  for (const x of readers) x.close();
  r.close(); // closing twice is harmless
  assert.equal(fdCount(), fdsBefore, 'close() releases every descriptor');
  assert.throws(() => r.read([0], out), /row reader is closed/);
}

// --- checkpoint (safetensors, two shards) ---------------------------------------------------

test('checkpoint: f32 / f16 / bf16 rows from either shard equal the loaded tensor', async () => {
  const dir = join(root, 'ckpt');
  mkdirSync(dir);
  const plain = (name: string, dtype: StDtype, shape: number[], seed: number): TensorToWrite => {
    const x = values(numel(shape), seed);
    const data = dtype === 'f32' ? x : dtype === 'f16' ? f32ArrayToF16(x) : f32ArrayToBf16(x);
    return { name, dtype, shape, bytes: () => new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
  };
  await writeSafetensors(join(dir, 'model-00001-of-00002.safetensors'), [
    plain('model.a.weight', 'f32', [37, 45], 1),
    plain('model.b.weight', 'f16', [37, 45], 2),
    plain('model.vec.weight', 'f32', [45], 3),
  ]);
  await writeSafetensors(join(dir, 'model-00002-of-00002.safetensors'), [
    plain('model.c.weight', 'bf16', [37, 45], 4),
    plain('model.d.weight', 'f16', [1, 7], 5),
    // 4 KiB rows: reading all 300 rows takes more than one positioned read.
    plain('model.wide.weight', 'f32', [300, 1024], 6),
  ]);
  const map: Record<string, string> = {};
  for (const n of ['a', 'b', 'vec']) map[`model.${n}.weight`] = 'model-00001-of-00002.safetensors';
  for (const n of ['c', 'd', 'wide']) map[`model.${n}.weight`] = 'model-00002-of-00002.safetensors';
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: map }));
  writeFileSync(join(dir, 'config.json'), JSON.stringify(fixtureConfig(SHAPES.tiny)));

  const before = fdCount();
  const src = Checkpoint.open(dir);
  const readers = checkAll(src, ['model.a.weight', 'model.b.weight', 'model.c.weight', 'model.d.weight', 'model.wide.weight']);
  assert.throws(() => src.rowReader('model.vec.weight'), /model-00001-of-00002\.safetensors: tensor "model\.vec\.weight" has shape \[45\]; reading rows needs a 2-D matrix/);
  assert.throws(() => src.rowReader('model.nope.weight'), /ckpt: tensor "model\.nope\.weight" is missing/);
  afterSourceClosed(src, readers, before);
});

// --- lutra package --------------------------------------------------------------------------

const PACKAGE_TENSORS: [string, number[]][] = [
  ['f32', [37, 45]],
  ['f16', [37, 45]],
  ['bf16', [37, 45]],
  ['int8:32', [37, 96]],
  ['int8:16', [37, 96]],
  ['int8:c', [37, 45]],
  ['int8:t', [37, 45]],
  ['int4:32', [37, 96]],
  ['int4:c', [37, 45]],
  ['int4:t', [37, 45]],
  ['lut4:8', [40, 45]],
  ['lut3:0', [37, 45]],
  ['lut5:4', [36, 45]],
  ['lut1:1', [37, 13]],
  ['lut8:2', [38, 45]],
  ['lut6:37', [37, 45]],
  ['lut2:0', [1, 3]],
  // 4 KiB rows: reading all 300 rows takes more than one positioned read (codes and scales).
  ['int8:c', [300, 4096]],
];

test('package: rows of every format equal the dequantized tensor; a row reads only its own codes and scales / table row', async () => {
  const out = join(root, 'pkg');
  const entries = PACKAGE_TENSORS.map(([fmt, shape], i) => {
    const name = `model.t${i}.weight`;
    const format = parseFormat(fmt, 'test');
    const x = values(numel(shape), 100 + i);
    return { name, shape, format, make: () => encodeTensor({ name, shape, format: { kind: 'f32' }, data: new Uint8Array(x.buffer), source: 'test' }, format) };
  });
  entries.push({ name: 'model.vec.weight', shape: [45], format: { kind: 'f32' }, make: () => ({ name: 'model.vec.weight', shape: [45], format: { kind: 'f32' }, data: new Uint8Array(values(45, 9).buffer) }) });
  const meta: Omit<PackageMeta, 'tensors' | 'total_bytes'> = {
    format_version: PACKAGE_FORMAT_VERSION,
    model: { name: 'rows', architecture: 'Gemma3ForCausalLM' },
    source: { path: 'test', kind: 'checkpoint', sha256: '' },
    context_length: 2048,
    sliding_window: 16,
    prefill_batch: 1,
    fp16_scale: { alpha: 1, chosen_by: 'test' },
    embed_scale: 8,
    numerics: 'f32',
    quantization: {},
    command: 'test',
    created_by: 'test',
  };
  await writePackage(out, meta, fixtureConfig(SHAPES.tiny), [], entries);

  const before = fdCount();
  const src = new PackageSource(out);
  const names = entries.slice(0, PACKAGE_TENSORS.length).map((e) => e.name);
  const readers = checkAll(src, names);
  for (const [i, [fmt]] of PACKAGE_TENSORS.entries()) assert.equal(formatName(readers[i].format), fmt);
  assert.throws(() => src.rowReader('model.vec.weight'), /pkg\/meta\.yaml: tensor "model\.vec\.weight" has shape \[45\]; reading rows needs a 2-D matrix/);
  assert.throws(() => src.rowReader('model.nope.weight'), /pkg\/meta\.yaml: package has no tensor "model\.nope\.weight"/);
  afterSourceClosed(src, readers, before);

  // Only a row's own bytes are read: with every other byte of its codes and scales / table
  // overwritten, the row still reads the same (and another row does not).
  for (const [i, r] of [[3, 20], [8, 11], [10, 21]] as const) {
    const name = `model.t${i}.weight`;
    const pkg = new PackageSource(out);
    const reader = pkg.rowReader(name);
    const cols = reader.cols;
    const want = dequantize(pkg.load(name)).slice(r * cols, (r + 1) * cols);
    const f = reader.format;
    pkg.close();
    const shard = join(out, 'model-00001-of-00001.safetensors');
    const st = SafetensorsFile.open(shard);
    const keep = (part: string, unit: number, index: number) => {
      const e = st.entries.get(`${name}.${part}`)!;
      return { e, from: e.offset + index * unit, to: e.offset + (index + 1) * unit };
    };
    const spans = [
      keep('codes', rowBytes(f, cols), r),
      f.kind === 'lut' ? keep('table', 2 * (1 << f.bits), f.group === 0 ? 0 : Math.floor(r / f.group)) : keep('scales', 2 * auxLayout(f, reader.rows, cols)!.values, r),
    ];
    st.close();
    const fd = openSync(shard, 'r+');
    for (const { e, from, to } of spans) {
      writeSync(fd, Buffer.alloc(from - e.offset, 0x5b), 0, from - e.offset, e.offset);
      writeSync(fd, Buffer.alloc(e.offset + e.nbytes - to, 0x5b), 0, e.offset + e.nbytes - to, to);
    }
    closeSync(fd);
    const got = new Float32Array(3 * cols);
    reader.read([r, r - 1, r], got);
    assert.ok(bytesOf(got.subarray(0, cols)).equals(bytesOf(want)) && bytesOf(got.subarray(2 * cols)).equals(bytesOf(want)), `${name} row ${r}`);
    assert.ok(!bytesOf(got.subarray(cols, 2 * cols)).equals(bytesOf(want)), `${name}: the neighbouring row was overwritten`);
    reader.close();
  }
});

// --- GGUF -----------------------------------------------------------------------------------

test('GGUF: F32 / F16 / BF16 / Q8_0 / Q4_0 rows equal the loaded tensor', async () => {
  const path = join(root, 'rows.gguf');
  const spec = (name: string, type: GgufType, shape: number[], seed: number): GgufTensorSpec => {
    const x = values(numel(shape), seed);
    const data =
      type === GgufType.Q8_0 ? encodeQ8_0(x)
      : type === GgufType.Q4_0 ? encodeQ4_0(x)
      : type === GgufType.F16 ? new Uint8Array(f32ArrayToF16(x).buffer)
      : type === GgufType.BF16 ? new Uint8Array(f32ArrayToBf16(x).buffer)
      : new Uint8Array(x.buffer);
    return { name, shape, type, nbytes: ggufTensorBytes(type, shape), data: () => data };
  };
  const tensors = [
    spec('token_embd.weight', GgufType.F32, [37, 45], 1),
    spec('blk.0.attn_q.weight', GgufType.F16, [37, 45], 2),
    spec('blk.0.attn_k.weight', GgufType.Q8_0, [37, 96], 3),
    spec('blk.0.attn_v.weight', GgufType.Q4_0, [37, 96], 4),
    spec('blk.0.ffn_up.weight', GgufType.BF16, [37, 45], 5),
    // 4352-byte rows: reading all 300 rows takes more than one positioned read.
    spec('blk.0.ffn_down.weight', GgufType.Q8_0, [300, 4096], 6),
    spec('blk.0.ffn_gate.weight', GgufType.Q4_0, [3, 32], 7),
    spec('output_norm.weight', GgufType.F32, [64], 8),
  ];
  await writeGguf(
    path,
    [
      kv.str('general.architecture', 'gemma3'),
      kv.u32('gemma3.embedding_length', 64),
      kv.u32('gemma3.feed_forward_length', 192),
      kv.u32('gemma3.block_count', 1),
      kv.u32('gemma3.attention.head_count', 4),
      kv.u32('gemma3.attention.head_count_kv', 2),
      kv.u32('gemma3.attention.key_length', 16),
      kv.u32('gemma3.context_length', 2048),
    ],
    tensors,
  );
  const before = fdCount();
  const src = new GgufSource(path);
  const names = ['model.embed_tokens.weight', 'model.layers.0.self_attn.q_proj.weight', 'model.layers.0.self_attn.k_proj.weight',
    'model.layers.0.self_attn.v_proj.weight', 'model.layers.0.mlp.up_proj.weight', 'model.layers.0.mlp.down_proj.weight', 'model.layers.0.mlp.gate_proj.weight'];
  const readers = checkAll(src, names);
  assert.deepEqual(readers.map((r) => formatName(r.format)), ['f32', 'f16', 'int8:32', 'int4:32', 'bf16', 'int8:32', 'int4:32']);
  assert.throws(() => src.rowReader('model.norm.weight'), /rows\.gguf: tensor "output_norm\.weight" \(model\.norm\.weight\) has shape \[64\]; reading rows needs a 2-D matrix/);
  assert.throws(() => src.rowReader('model.layers.0.self_attn.o_proj.weight'), /rows\.gguf: tensor "model\.layers\.0\.self_attn\.o_proj\.weight" is missing/);
  afterSourceClosed(src, readers, before);
});
