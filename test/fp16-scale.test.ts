import { test } from 'node:test';
import assert from 'node:assert/strict';
import { F32_NUMERICS } from '../src/fp16/numerics.js';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { spawnSync } from 'node:child_process';
import { convert } from '../src/quant/convert.js';
import { buildPlan } from '../src/quant/plan.js';
import { loadModel } from '../src/runtime/load.js';
import { ReferenceBackend } from '../src/backend/reference/index.js';
import { Session } from '../src/runtime/session.js';
import { auditFp16, FP16_MAX } from '../src/fp16/audit.js';
import { overflowFixture, tinyFixture, maxAbsDiff, tokenSequence } from './helpers.js';

const fx = await tinyFixture(2);
const ids = tokenSequence(40, 9);
// f32 math even for packages whose meta.yaml records fp16 numerics: these tests are about the transform.
const model = (dir: string) => loadModel(dir, new ReferenceBackend(), { tokenizer: false, numerics: F32_NUMERICS }).model;

test('α-scaling is exact in f32: same logits, residual stream scaled by α', async () => {
  const out = join(fx.root, 'scaled');
  const meta = await convert({ src: fx.dir, out, plan: buildPlan({ quant: [], weightThreshold: 0 }), command: 'test', fp16Scale: { alpha: 0.25, chosenBy: 'test' } });
  assert.equal(meta.fp16_scale.alpha, 0.25);
  assert.equal(meta.embed_scale, 2); // 0.25 × sqrt(64)
  const a = model(fx.dir);
  const b = model(out);
  const la = new Session(a, { contextLength: 64 }).prefill(ids, { all: true });
  const lb = new Session(b, { contextLength: 64 }).prefill(ids, { all: true });
  const d = maxAbsDiff(la, lb);
  assert.ok(d <= 1e-4, `max |Δlogit| ${d}`);
  const pa = auditFp16(a, [ids]);
  const pb = auditFp16(b, [ids]);
  for (let l = 0; l < pa.layers.length; l++) {
    const ratio = pb.layers[l].peaks.residual / pa.layers[l].peaks.residual;
    assert.ok(Math.abs(ratio - 0.25) < 1e-4, `layer ${l}: residual peak ratio ${ratio}`);
  }
});

test('convert --fp16-scale auto takes α from the audit and brings an overflowing model under 65504', async () => {
  const hot = await overflowFixture(join(fx.root, 'hot'));
  const out = join(fx.root, 'hot-auto');
  const r = spawnSync(process.execPath, [resolve('dist/src/cli/main.js'), 'convert', '--model', hot, '--out', out, '--fp16-scale', 'auto'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const alpha = Number(/alpha: ([\d.]+)/.exec(readFileSync(join(out, 'meta.yaml'), 'utf8'))![1]);
  assert.ok(alpha < 1 && (alpha * 64) % 1 === 0, `α ${alpha}`);
  assert.match(readFileSync(join(out, 'meta.yaml'), 'utf8'), /chosen_by: "?auto: 50000 \/ peak residual/);
  const before = auditFp16(model(hot), [ids]);
  const after = auditFp16(model(out), [ids]);
  assert.ok(before.residualPeak > FP16_MAX);
  assert.ok(after.residualPeak < FP16_MAX, `scaled peak ${after.residualPeak}`);
  const la = new Session(model(hot), { contextLength: 64 }).prefill(ids);
  const lb = new Session(model(out), { contextLength: 64 }).prefill(ids);
  assert.ok(maxAbsDiff(la, lb) <= 1e-3, `max |Δlogit| ${maxAbsDiff(la, lb)}`);
});

test('a bad α is refused by flag', () => {
  const r = spawnSync(process.execPath, [resolve('dist/src/cli/main.js'), 'convert', '--model', fx.dir, '--out', join(fx.root, 'bad'), '--fp16-scale', '2'], { encoding: 'utf8' });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /--fp16-scale 2: α must be in \(0, 1\], got 2/);
});

test.after(() => fx.cleanup());
