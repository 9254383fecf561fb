import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import { convert } from '../src/quant/convert.js';
import { buildPlan } from '../src/quant/plan.js';
import { exportGguf } from '../src/io/gguf-export.js';
import { inspectModel, type InspectReport } from '../src/verify/inspect.js';
import { tinyFixture } from './helpers.js';

const CLI = resolve('dist/src/cli/main.js');
const fx = await tinyFixture(3);
const int8 = join(fx.root, 'int8');
const lut2 = join(fx.root, 'lut2');
await convert({ src: fx.dir, out: int8, plan: buildPlan({ quant: ['attn=int8:32', 'ffn=int8:32'], weightThreshold: 0 }), command: 'test' });
await convert({ src: fx.dir, out: lut2, plan: buildPlan({ quant: ['attn=lut2:8', 'ffn=lut2:8'], weightThreshold: 0 }), command: 'test' });

const ffn = (r: InspectReport) => r.tensors.filter((t) => t.name.includes('.mlp.'));

test('inspect --against: int8:32 errors are small, 2-bit LUT errors much larger, condition figures above 1', (t) => {
  const a = inspectModel(int8, fx.dir);
  const b = inspectModel(lut2, fx.dir);
  for (const r of [a, b]) {
    assert.equal(r.kind, 'package');
    assert.equal(r.tensors.length, 8 * 13 + 2);
    assert.equal(r.summary.total_bytes, r.tensors.reduce((s, t) => s + t.bytes, 0));
    for (const x of r.tensors) {
      assert.ok(x.condition! > 1 && x.condition_worst_channel! >= x.condition! * 0.5, `${x.name}: ${x.condition} ${x.condition_worst_channel}`);
      assert.ok(x.condition_worst_channel! <= Math.sqrt(x.shape.at(-1)!) + 1e-9, 'max/RMS of n values is at most sqrt(n)');
    }
    // Unquantized tensors are exact.
    const norm = r.tensors.find((t) => t.name === 'model.norm.weight')!;
    assert.equal(norm.rel_rms, 0);
    assert.equal(norm.format, 'bf16');
  }
  const worst8 = Math.max(...ffn(a).map((t) => t.rel_rms!));
  const best2 = Math.min(...ffn(b).map((t) => t.rel_rms!));
  t.diagnostic(`FFN rel RMS: int8:32 worst ${worst8.toExponential(3)}, lut2:8 best ${best2.toExponential(3)}; worst tensors ${a.summary.worst_tensor} / ${b.summary.worst_tensor} (${b.summary.worst_rel_rms!.toExponential(3)})`);
  assert.ok(worst8 < 0.01, `int8:32 rel RMS up to ${worst8}`);
  assert.ok(best2 > 0.2 && best2 > 20 * worst8, `lut2:8 rel RMS from ${best2}`);
  assert.ok(ffn(a).every((t) => t.cosine! > 0.9999));
  assert.ok(a.summary.total_bytes < a.summary.source_bytes!);
  assert.match(b.summary.worst_tensor!, /self_attn|mlp/);
});

test('lutra inspect --json parses; a GGUF inspected against its package shows Q8_0 = int8:32 exactly', async () => {
  const pkg = join(fx.root, 'all8');
  await convert({ src: fx.dir, out: pkg, plan: buildPlan({ quant: ['all=int8:32'], weightThreshold: 0 }), command: 'test' });
  const gguf = join(fx.root, 'all8.gguf');
  await exportGguf({ model: pkg, out: gguf, type: 'q8_0' });
  const r = spawnSync(process.execPath, [CLI, 'inspect', gguf, '--against', pkg, '--json'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const rep = JSON.parse(r.stdout) as InspectReport;
  assert.equal(rep.kind, 'gguf');
  const q = rep.tensors.find((t) => t.name === 'model.layers.0.mlp.up_proj.weight')!;
  assert.equal(q.ggml, 'Q8_0');
  assert.equal(q.format, 'int8:32');
  assert.equal(q.bytes, (192 * 64 * 34) / 32);
  // Matrices are the same values; norms went through 1 + w and back in f32.
  for (const t of rep.tensors) assert.ok(t.shape.length === 2 ? t.rel_rms === 0 : t.rel_rms! < 1e-6, `${t.name}: ${t.rel_rms}`);
  // Text output: a table and a one-line summary.
  const text = spawnSync(process.execPath, [CLI, 'inspect', int8], { encoding: 'utf8' });
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, /format_version: 1/);
  assert.match(text.stdout, /model\.layers\.0\.mlp\.up_proj\.weight +int8:32 +\[192, 64\] +13056/);
  assert.match(text.stdout, /\n106 tensors, [\d.]+ MiB\n$/);
  const bad = spawnSync(process.execPath, [CLI, 'inspect'], { encoding: 'utf8' });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr.trim(), /^lutra: error: lutra inspect: expected one model path/);
});

test.after(() => fx.cleanup());
