// The format table (src/model/formats.ts) against facts it does not derive itself: the byte
// counts written out per format, what the quantizer really produces and the package really
// stores, ggml's own block sizes, ggml's Q8_0/Q4_0 decoder, and the flag-naming messages.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  auxCount, auxLayout, FORMAT_KINDS, formatName, formatOfGgml, ggmlTypeOf, misfit, parseFormat, rowBytes,
} from '../src/model/formats.js';
import type { WeightFormat, WeightTensor } from '../src/model/weight.js';
import { encodeTensor } from '../src/quant/convert.js';
import { dequantize } from '../src/backend/reference/index.js';
import { usesQ8 } from '../src/backend/reference/q8.js';
import { PACKAGE_FORMAT_VERSION, storedBytes, writePackage, type PackageMeta } from '../src/io/package.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { decodeQ4_0, decodeQ8_0, GgufType, ggufTypeInfo } from '../src/io/gguf.js';
import { int4ToQ4_0, int8ToQ8_0, q4_0ToInt4, q8_0ToInt8 } from '../src/io/gguf-blocks.js';
import { sameValuesExportType } from '../src/io/gguf-export.js';
import { buildPlan, checkFormatFits } from '../src/quant/plan.js';
import { fixtureConfig, SHAPES } from '../src/model/fixture.js';

const NAMES = [
  'f32', 'f16', 'bf16',
  'int8:32', 'int8:3', 'int8:c', 'int8:t', 'int4:32', 'int4:3', 'int4:c', 'int4:t',
  ...[1, 2, 3, 4, 5, 6, 7, 8].map((b) => `lut${b}:0`), 'lut3:7', 'lut4:1', 'lut5:5',
];
const SAMPLES = NAMES.map((n) => parseFormat(n, 'test'));

/** Row bytes written out per kind, not taken from the table. */
function expectedRowBytes(f: WeightFormat, cols: number): number {
  if (f.kind === 'lut') return Math.ceil((cols * f.bits) / 8);
  if (f.kind === 'int8') return cols;
  if (f.kind === 'int4') return Math.ceil(cols / 2);
  return f.kind === 'f32' ? 4 * cols : 2 * cols;
}

/** Scales or table entries written out per kind: one scale per block / row / tensor, 2^b per group. */
function expectedAux(f: WeightFormat, rows: number, cols: number): number {
  if (f.kind === 'int8' || f.kind === 'int4') return f.group === 't' ? 1 : f.group === 'c' ? rows : (rows * cols) / f.group;
  if (f.kind === 'lut') return (f.group === 0 ? 1 : rows / f.group) * 2 ** f.bits;
  return 0;
}

function gaussian(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const u = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s + 0.5) / 2 ** 32;
  };
  return Float32Array.from({ length: n }, () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u()));
}

function f32Tensor(name: string, rows: number, cols: number, seed: number): WeightTensor {
  const x = gaussian(rows * cols, seed);
  return { name, shape: [rows, cols], format: { kind: 'f32' }, data: new Uint8Array(x.buffer), source: 'test' };
}

function relRms(a: Float32Array, b: Float32Array): number {
  let e = 0, s = 0;
  for (let i = 0; i < a.length; i++) {
    e += (a[i] - b[i]) ** 2;
    s += b[i] ** 2;
  }
  return Math.sqrt(e / s);
}

test('every kind is named and parsed back: parse(name(f)) == f', () => {
  assert.deepEqual([...new Set(SAMPLES.map((f) => f.kind))].sort(), [...FORMAT_KINDS].sort());
  for (const [i, f] of SAMPLES.entries()) {
    assert.equal(formatName(f), NAMES[i]);
    assert.deepEqual(parseFormat(formatName(f), 'test'), f);
  }
  assert.deepEqual(parseFormat(' INT4:C ', 'x'), { kind: 'int4', group: 'c' });
  assert.throws(() => parseFormat('int8:0', '--quant ffn=int8:0'), /^LutraError: --quant ffn=int8:0: "int8:0": the block size must be positive/);
  assert.throws(() => parseFormat('lut0:4', '--quant ffn=lut0:4'), /--quant ffn=lut0:4: unknown format "lut0:4"/);
});

test('row bytes and scale / table counts are what the quantizer produces and the package stores, on awkward sizes', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lutra-formats-'));
  try {
    const entries: { name: string; shape: number[]; format: WeightFormat; want: Float32Array; made: ReturnType<typeof encodeTensor> }[] = [];
    for (const [rows, cols] of [[7, 96], [5, 33]]) {
      for (const f of SAMPLES) {
        if (misfit(f, rows, cols) !== null) continue;
        const src = f32Tensor(`t${entries.length}`, rows, cols, 1 + entries.length);
        const made = encodeTensor(src, f);
        const label = `${formatName(f)} [${rows}, ${cols}]`;
        assert.equal(rowBytes(f, cols), expectedRowBytes(f, cols), label);
        assert.equal(made.data.byteLength, rows * expectedRowBytes(f, cols), label);
        const aux = made.scales ?? made.table;
        assert.equal(aux?.length ?? 0, expectedAux(f, rows, cols), label);
        assert.equal(auxCount(f, rows, cols), expectedAux(f, rows, cols), label);
        assert.equal(auxLayout(f, rows, cols)?.name, made.scales ? 'scales' : made.table ? 'table' : undefined, label);
        // Row r decodes to row r of the source: a wrong stride or scale / table index would not.
        const got = dequantize({ ...made, source: 'test' });
        const bound = f.kind === 'lut' ? [0, 0.8, 0.5, 0.3, 0.2, 0.1, 0.06, 0.03, 0.02][f.bits] : { f32: 0, f16: 1e-3, bf16: 5e-3, int8: 0.02, int4: 0.2 }[f.kind];
        assert.ok(relRms(got, dequantize(src)) <= bound, `${label}: rel RMS ${relRms(got, dequantize(src))} > ${bound}`);
        entries.push({ name: src.name, shape: [rows, cols], format: f, want: got, made });
      }
    }
    const meta: Omit<PackageMeta, 'tensors' | 'total_bytes'> = {
      format_version: PACKAGE_FORMAT_VERSION,
      model: { name: 'formats', architecture: 'Gemma3ForCausalLM' },
      source: { path: 'test', kind: 'checkpoint', sha256: '' },
      context_length: 2048, sliding_window: 16, prefill_batch: 1, fp16_scale: { alpha: 1, chosen_by: 'test' },
      embed_scale: 8, numerics: 'f32', quantization: {}, command: 'test', created_by: 'test',
    };
    const out = join(dir, 'pkg');
    const written = await writePackage(out, meta, fixtureConfig(SHAPES.tiny), [], entries.map((e) => ({ ...e, make: () => e.made })));
    const st = SafetensorsFile.open(join(out, 'model-00001-of-00001.safetensors'));
    try {
      for (const e of entries) {
        const onDisk = [...st.entries.values()].filter((p) => p.name === e.name || p.name.startsWith(`${e.name}.`)).reduce((n, p) => n + p.nbytes, 0);
        assert.equal(storedBytes(e.shape, e.format), onDisk, formatName(e.format));
        assert.equal(written.tensors.find((t) => t.name === e.name)!.bytes, onDisk);
      }
    } finally {
      st.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('GGUF: the ggml type of a format holds its values and loads back as it; ggml block sizes agree', () => {
  const expected: Record<string, string> = { f32: 'F32', f16: 'F16', bf16: 'BF16', 'int8:32': 'Q8_0', 'int4:32': 'Q4_0' };
  for (const f of SAMPLES) {
    const type = ggmlTypeOf(f);
    assert.equal(type, expected[formatName(f)] ?? null, formatName(f));
    if (type === null) continue;
    assert.deepEqual(formatOfGgml(type), f);
    // ggml's bytes per block (from libggml) = lutra's codes for a block plus one f16 scale per block.
    const info = ggufTypeInfo(GgufType[type])!;
    assert.equal(info.typeSize, rowBytes(f, info.blockSize) + 2 * auxCount(f, 1, info.blockSize), type);
  }
  assert.equal(formatOfGgml('Q4_1'), null);
  // What `bench --vs-llama-cpp` can export as is: lutra writes no BF16.
  assert.deepEqual(SAMPLES.map(sameValuesExportType).filter((t) => t !== null), ['f32', 'f16', 'q8_0', 'q4_0']);
  assert.equal(sameValuesExportType({ kind: 'bf16' }), null);

  // The blocks ggml's own decoder reads hold the values lutra decodes, and read back bit for bit.
  const src = f32Tensor('w', 7, 96, 5);
  for (const [f, toGgml, decode, back] of [
    [parseFormat('int8:32', 'test'), int8ToQ8_0, decodeQ8_0, q8_0ToInt8],
    [parseFormat('int4:32', 'test'), int4ToQ4_0, decodeQ4_0, q4_0ToInt4],
  ] as const) {
    const w = { ...encodeTensor(src, f), source: 'test' };
    const blocks = toGgml(w);
    assert.deepEqual(decode(blocks), dequantize(w), formatName(f));
    const q = back(blocks, 7, 96, 'test');
    assert.deepEqual([q.codes, q.scales], [w.data, w.scales], formatName(f));
  }
  assert.throws(() => int8ToQ8_0({ ...encodeTensor(src, parseFormat('int8:c', 'test')), source: 'x.safetensors' }), /^LutraError: x\.safetensors: tensor "w" is int8:c; only int8:32 maps exactly onto Q8_0$/);
});

test('fit checks name the tensor, its shape, the format and the flag that chose it', () => {
  assert.equal(misfit(parseFormat('int4:32', 'x'), 5, 96), null);
  assert.equal(misfit(parseFormat('lut4:0', 'x'), 7, 3), null);
  assert.equal(misfit(parseFormat('int8:c', 'x'), 7, 5), null);
  const plan = buildPlan({ quant: ['ffn=int4:48'], lut1: '4,5', weightThreshold: 0 });
  assert.throws(
    () => checkFormatFits(plan, 'model.layers.0.mlp.up_proj.weight', 'ffn', [192, 64], plan.parts.ffn!, 'ckpt'),
    /^LutraError: --quant ffn=int4:48: int4:48 does not fit tensor "model\.layers\.0\.mlp\.up_proj\.weight" \[192,64\] of ckpt: its 64 columns are not a multiple of the block size 48$/,
  );
  assert.throws(
    () => checkFormatFits(plan, 'model.embed_tokens.weight', 'embed', [262, 64], plan.parts.embed!, 'ckpt'),
    /^LutraError: --lut1 4,5: lut4:5 does not fit tensor "model\.embed_tokens\.weight" \[262,64\] of ckpt: its 262 rows are not a multiple of the group size 5$/,
  );
});

test('q8 activations apply to int formats whose scale blocks hold whole blocks of 32, and to every LUT', () => {
  const q8 = Object.fromEntries(['int8:32', 'int8:64', 'int8:c', 'int8:t', 'int8:48', 'int4:32', 'int4:16', 'f16', 'bf16', 'lut4:0', 'lut3:5'].map((n) => [n, usesQ8(parseFormat(n, 'x'))]));
  assert.deepEqual(q8, { 'int8:32': true, 'int8:64': true, 'int8:c': true, 'int8:t': true, 'int8:48': false, 'int4:32': true, 'int4:16': false, f16: false, bf16: false, 'lut4:0': true, 'lut3:5': true });
});
