// lutra diff: singular values against matrices built with known ones, the LoRA (low-rank) route
// against the dense route on the merged checkpoint, and a synthetic fine-tune whose moved layers the
// report must name, in the order of their ΔW norms, with the residual streams equal before them.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, mkdirSync, rmSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { spawnSync } from 'node:child_process';
import { effectiveRank, lowRankSingularValues, singularValues } from '../src/analysis/linalg.js';
import { diffModels } from '../src/analysis/diff.js';
import { WasmBackend } from '../src/backend/wasm/index.js';
import { SafetensorsFile, writeSafetensors } from '../src/io/safetensors.js';
import { bf16ArrayToF32 } from '../src/util/half.js';
import { convert } from '../src/quant/convert.js';
import { buildPlan } from '../src/quant/plan.js';
import { CLI } from './server-helpers.js';
import { launchChromium, newPage } from './browser-helpers.js';

const DEMO = 'models/demo';
const ADAPTER = 'models/demo-lora';
const root = mkdtempSync(join(tmpdir(), 'lutra-diff-'));
after(() => rmSync(root, { recursive: true, force: true }));

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s / 2 ** 32) * 2 - 1;
  };
}

/** A random n × n orthogonal matrix: the product of n Householder reflections of random vectors. */
function orthogonal(n: number, seed: number): Float64Array {
  const q = new Float64Array(n * n);
  for (let i = 0; i < n; i++) q[i * n + i] = 1;
  const r = rng(seed);
  for (let k = 0; k < n; k++) {
    const v = Float64Array.from({ length: n }, r);
    const vv = v.reduce((a, x) => a + x * x, 0);
    // q ← q (I − 2vvᵀ/vv)
    for (let i = 0; i < n; i++) {
      let d = 0;
      for (let j = 0; j < n; j++) d += q[i * n + j] * v[j];
      for (let j = 0; j < n; j++) q[i * n + j] -= (2 * d * v[j]) / vv;
    }
  }
  return q;
}

test('singular values of U·diag(σ)·Vᵀ are σ (tall, wide, repeated and zero values); the low-rank route agrees', () => {
  for (const [rows, cols] of [[37, 23], [19, 41], [30, 30]]) {
    const n = Math.min(rows, cols);
    const sigma = Array.from({ length: n }, (_, i) => (i < 3 ? 5 : i % 7 === 0 ? 0 : 1 / (i + 1)));
    sigma.sort((a, b) => b - a);
    const U = orthogonal(rows, rows);
    const V = orthogonal(cols, cols + 100);
    const m = new Float64Array(rows * cols);
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) for (let k = 0; k < n; k++) m[i * cols + j] += U[i * rows + k] * sigma[k] * V[j * cols + k];
    const sv = singularValues(m, rows, cols);
    // Through the Gram matrix, σ carries an absolute error of about √ε·σ_max (ε = 2^-52): 1e-7·σ_max.
    for (let k = 0; k < n; k++) assert.ok(Math.abs(sv[k] - sigma[k]) < 1e-7 * sigma[0], `${rows}×${cols} σ${k}: ${sv[k]} vs ${sigma[k]}`);
  }
  // s·B·A with A [r, in], B [out, r]: the same values as the dense product's.
  const r = 5;
  const inF = 40;
  const out = 33;
  const g = rng(9);
  const A = Float64Array.from({ length: r * inF }, g);
  const B = Float64Array.from({ length: out * r }, g);
  const dense = new Float64Array(out * inF);
  for (let o = 0; o < out; o++) for (let i = 0; i < inF; i++) for (let k = 0; k < r; k++) dense[o * inF + i] += 0.7 * B[o * r + k] * A[k * inF + i];
  const full = singularValues(dense, out, inF);
  const low = lowRankSingularValues(A, B, r, inF, out, 0.7);
  for (let k = 0; k < r; k++) assert.ok(Math.abs(full[k] - low[k]) < 1e-9 * full[0], `σ${k}: ${full[k]} vs ${low[k]}`);
  assert.ok(full[r] < 1e-6 * full[0], 'rank r');
  assert.equal(effectiveRank([1, 0, 0]), 1);
  assert.ok(Math.abs(effectiveRank([2, 2, 2, 2]) - 4) < 1e-12);
});

test('diff of base + adapter (low-rank route) equals diff of base vs the merged f32 checkpoint (dense route)', async () => {
  const merged = join(root, 'merged');
  await convert({ src: DEMO, out: merged, plan: buildPlan({ quant: ['attn=f32', 'ffn=f32'], weightThreshold: 0 }), command: 'test', lora: [{ dir: ADAPTER, weight: 1 }] });
  const backend = () => new WasmBackend({ threads: 2 });
  const prompts = [[2, 100, 200, 300, 400, 500]];
  const viaLora = diffModels(DEMO, { other: null, lora: [{ dir: ADAPTER, weight: 1 }], prompts, backend, top: 12 });
  const viaDense = diffModels(DEMO, { other: merged, prompts, backend, top: 12 });
  assert.equal(viaLora.matrices.length, 8 * 7);
  for (let i = 0; i < viaLora.matrices.length; i++) {
    const a = viaLora.matrices[i];
    const b = viaDense.matrices[i];
    assert.equal(a.name, b.name);
    assert.ok(Math.abs(a.relNorm - b.relNorm) <= 1e-4 * a.relNorm, `${a.name}: ${a.relNorm} vs ${b.relNorm}`);
    for (let k = 0; k < 8; k++) assert.ok(Math.abs(a.singular[k] - b.singular[k]) <= 1e-3 * a.singular[0], `${a.name} σ${k}`);
    assert.ok(b.singular[8] < 1e-3 * b.singular[0], `${b.name}: the dense ΔW has rank 8`);
    assert.ok(a.effectiveRank <= 8 && a.rank99 <= 8);
  }
  assert.deepEqual(viaLora.mostMoved, viaDense.mostMoved);
  for (const l of viaLora.layers) assert.ok(Math.abs(l.cosineMean! - viaDense.layers[l.layer].cosineMean!) < 1e-5);
});

test('a synthetic fine-tune: diff names the layers moved, in the order of their ΔW norms; streams equal before the first; the page shows it', async () => {
  // Copy the demo checkpoint, adding noise to layer 5's up_proj (large) and layer 2's q_proj (smaller).
  const tuned = join(root, 'tuned');
  mkdirSync(tuned);
  for (const f of readdirSync(DEMO)) if (f !== 'model.safetensors') copyFileSync(join(DEMO, f), join(tuned, f));
  const st = SafetensorsFile.open(join(DEMO, 'model.safetensors'));
  const noise = new Map([['model.layers.5.mlp.up_proj.weight', 0.2], ['model.layers.2.self_attn.q_proj.weight', 0.05]]);
  const g = rng(3);
  const tensors = [...st.entries.values()].map((e) => {
    const raw = st.read(e.name);
    const amp = noise.get(e.name);
    if (amp === undefined) return { name: e.name, dtype: e.dtype, shape: e.shape, bytes: () => raw };
    const x = bf16ArrayToF32(new Uint16Array(raw.buffer, raw.byteOffset, raw.byteLength / 2));
    for (let i = 0; i < x.length; i++) x[i] += amp * g() * Math.abs(x[i]) * 10;
    return { name: e.name, dtype: 'f32' as const, shape: e.shape, bytes: () => new Uint8Array(x.buffer) };
  });
  await writeSafetensors(join(tuned, 'model.safetensors'), tensors);
  st.close();
  const out = join(root, 'diff.html');
  const r = spawnSync(process.execPath, [CLI, 'diff', DEMO, tuned, '--out', out, '--json', '--threads', '2'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const rep = JSON.parse(r.stdout);
  assert.deepEqual(rep.mostMoved.slice(0, 2), [5, 2]);
  for (const m of rep.matrices) {
    if (noise.has(m.name)) assert.ok(m.relNorm > 0.01, m.name);
    else assert.equal(m.relNorm, 0, `${m.name} is unchanged`);
  }
  // Before layer 2 the two models are the same computation: cosine exactly 1; after it, below.
  for (const l of rep.layers) {
    if (l.layer < 2) assert.equal(l.cosineMin, 1, `layer ${l.layer}`);
    else assert.ok(l.cosineMin < 1, `layer ${l.layer}`);
  }
  const text = spawnSync(process.execPath, [CLI, 'diff', DEMO, tuned, '--out', out, '--threads', '2'], { encoding: 'utf8' });
  assert.match(text.stdout, /layers moved most: 5, 2,/);
  const bad = spawnSync(process.execPath, [CLI, 'diff', DEMO], { encoding: 'utf8' });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /lutra diff: give OTHER \(a second model\) or --lora DIR/);
  const b = await launchChromium();
  try {
    const { page, errors } = await newPage(b);
    await page.goto(pathToFileURL(out).href);
    const most = await page.textContent('#most');
    assert.match(most!, /^5, 2/);
    // The hottest cell is layer 5's up_proj, drawn in the deepest colour.
    const cells = await page.$$eval('#heatmap td[data-rel]', (tds) => tds.map((td) => ({ layer: td.getAttribute('data-layer'), module: td.getAttribute('data-module'), rel: Number(td.getAttribute('data-rel')), bg: getComputedStyle(td).backgroundColor })));
    const hottest = cells.reduce((a, c) => (c.rel > a.rel ? c : a));
    assert.equal(`${hottest.layer} ${hottest.module}`, '5 mlp.up_proj');
    assert.equal(hottest.bg, 'rgb(255, 38, 34)');
    assert.equal(cells.find((c) => c.layer === '0')!.bg, 'rgb(255, 255, 230)');
    assert.deepEqual(errors, []);
    await page.screenshot({ path: join(root, 'diff.png') });
  } finally {
    await b.close();
  }
});
