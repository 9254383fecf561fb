import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { spawnSync } from 'node:child_process';
import { loadModel } from '../src/runtime/load.js';
import { ReferenceBackend } from '../src/backend/reference/index.js';
import { auditFp16, recommendAlpha, FP16_MAX } from '../src/fp16/audit.js';
import { overflowFixture, tinyFixture, tokenSequence } from './helpers.js';

const fx = await tinyFixture(0);

const overflowDir = () => overflowFixture(join(fx.root, 'overflow'));

test('α is 50 000 / peak rounded down to 1/64, and 1 below the target', () => {
  assert.equal(recommendAlpha(40), 1);
  assert.equal(recommendAlpha(1e5), 32 / 64);
  assert.equal(recommendAlpha(2.9e5), 11 / 64); // the peak reported for Gemma 3 4B-QAT
  assert.ok(recommendAlpha(2.9e5) * 2.9e5 <= 50000);
});

test('the audit names the first overflowing layer and an α that brings the residual under the target', async () => {
  const ids = tokenSequence(40, 1);
  const normal = auditFp16(loadModel(fx.dir, new ReferenceBackend(), { tokenizer: false }).model, [ids]);
  assert.equal(normal.firstOverflow, null);
  assert.equal(normal.alpha, 1);
  const r = auditFp16(loadModel(await overflowDir(), new ReferenceBackend(), { tokenizer: false }).model, [ids]);
  assert.deepEqual([r.firstOverflow?.layer, r.firstOverflow?.point], [3, 'ffn_post']);
  assert.ok(r.layers[2].peaks.residual < FP16_MAX);
  assert.ok(r.residualPeak > FP16_MAX);
  assert.ok(r.alpha < 1 && r.alpha * r.residualPeak <= 50000 && (r.alpha * 64) % 1 === 0, `α ${r.alpha}, peak ${r.residualPeak}`);
});

test('lutra audit-fp16 prints the table and writes JSON and an HTML plot', () => {
  const json = join(fx.root, 'audit.json');
  const html = join(fx.root, 'audit.html');
  const r = spawnSync(process.execPath, [resolve('dist/src/cli/main.js'), 'audit-fp16', '--model', join(fx.root, 'overflow'), '--prompt', 'Hello there', '--json', json, '--plot', html], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /first overflow: layer 3 ffn_post/);
  assert.match(r.stdout, /recommended α = 0\.\d+/);
  const j = JSON.parse(readFileSync(json, 'utf8'));
  assert.equal(j.firstOverflow.layer, 3);
  assert.match(readFileSync(html, 'utf8'), /<svg[\s\S]*fp16 max 65504/);
});

test.after(() => fx.cleanup());
