// Gemma 4 mixture of experts on the tiny-gemma4-moe fixture (8 experts, top 2, beside the dense
// MLP on every layer; K=V full layers): lutra against the independent float64 reference of the HF
// semantics on both backends, the router's choice against the reference's on every token and
// layer, decode against batched prefill past the sliding window, and expert slicing of stacked
// tensors in every weight format.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeFixture } from '../src/model/fixture.js';
import { Checkpoint } from '../src/io/checkpoint.js';
import { loadModel } from '../src/runtime/load.js';
import { ReferenceBackend, dequantize } from '../src/backend/reference/index.js';
import { WasmBackend } from '../src/backend/wasm/index.js';
import type { Backend } from '../src/backend/backend.js';
import { Session } from '../src/runtime/session.js';
import type { Gemma4Model } from '../src/arch/gemma4/model.js';
import type { Gemma4Config } from '../src/arch/config-types.js';
import { route } from '../src/arch/gemma4/moe.js';
import { sliceRows, parseFormat } from '../src/model/formats.js';
import { convert, encodeTensor } from '../src/quant/convert.js';
import { buildPlan } from '../src/quant/plan.js';
import { PackageSource } from '../src/io/package.js';
import { formatName } from '../src/model/formats.js';
import { exportTypeFor, matrixFormats } from '../src/bench/gguf.js';
import { weightBytes } from '../src/bench/weights.js';
import { logSoftmax } from '../src/verify/metrics.js';
import { gemma4ReferenceLogProbs } from './gemma4-reference.js';
import { maxAbsDiff, tokenSequence } from './helpers.js';

const root = mkdtempSync(join(tmpdir(), 'lutra-gemma4-moe-'));
const dir = join(root, 'tiny-gemma4-moe');
await writeFixture(dir, 'tiny-gemma4-moe', 11);
process.on('exit', () => rmSync(root, { recursive: true, force: true }));

const ck = Checkpoint.open(dir);
const cfg = ck.config as Gemma4Config;
const cache = new Map<string, Float32Array>();
const W = (name: string) => {
  let w = cache.get(name);
  if (!w) cache.set(name, (w = dequantize(ck.load(name))));
  return w;
};
const ids = tokenSequence(4 * cfg.slidingWindow, 23); // 64 positions: four sliding windows
const routes: number[][][] = [];
// The fixture is bf16, so lutra scales embeddings by sqrt(96) rounded to bf16 (9.8125), as an HF
// bf16 run does.
const reference = gemma4ReferenceLogProbs(cfg, W, ids, { routes, bf16EmbedScale: true });
ck.close();

test('the tiny MoE fixture has experts on every layer, K=V full layers and no per-layer embeddings', () => {
  assert.equal(cfg.enableMoeBlock, true);
  assert.equal(cfg.numExperts, 8);
  assert.equal(cfg.topKExperts, 2);
  assert.equal(cfg.hiddenSizePerLayerInput, 0);
  assert.ok(cfg.layers.some((l) => l.kEqV), 'a K=V full layer');
  // Every expert is chosen somewhere, so none of them is dead weight in the comparison.
  assert.equal(new Set(routes.flat(2)).size, 8);
});

interface Run {
  logp: Float64Array[];
  /** routes[layer][position] = expert ids, most probable first. */
  routes: number[][][];
}

function run(B: Backend, decode: boolean): Run {
  const { model } = loadModel(dir, B, { tokenizer: false });
  const m = model as Gemma4Model;
  const got: number[][][] = [];
  let pos = 0;
  m.onRoute = (l, experts, T) => {
    const k = cfg.topKExperts!;
    for (let t = 0; t < T; t++) (got[l] ??= [])[pos + t] = Array.from(experts.subarray(t * k, (t + 1) * k));
  };
  try {
    const s = new Session(model, { contextLength: 80, prefillBatch: 24, qChunk: 8 });
    const V = model.vocabSize;
    if (decode) {
      return {
        logp: ids.map((id, t) => {
          pos = t;
          return logSoftmax(s.step(id));
        }),
        routes: got,
      };
    }
    // Prefill in batches of 24: each batch's rows start at its first position.
    const logp: Float64Array[] = [];
    for (let b = 0; b < ids.length; b += 24) {
      pos = b;
      const chunk = ids.slice(b, b + 24);
      const all = s.prefill(chunk, { all: true });
      chunk.forEach((_, t) => logp.push(logSoftmax(all.subarray(t * V, (t + 1) * V))));
    }
    return { logp, routes: got };
  } finally {
    model.close?.();
  }
}

function maxRowDiff(a: ArrayLike<number>[], b: ArrayLike<number>[]): number {
  let m = 0;
  a.forEach((row, t) => {
    for (let i = 0; i < row.length; i++) m = Math.max(m, Math.abs(row[i] - b[t][i]));
  });
  return m;
}

test('both backends match the float64 reference and pick the reference experts on every token (prefill and decode)', (t) => {
  const wasm = new WasmBackend({ threads: 2, minParallelWork: 1 });
  try {
    for (const [name, B] of [['reference', new ReferenceBackend({ activations: 'f32' })], ['wasm', wasm]] as [string, Backend][]) {
      for (const decode of [false, true]) {
        const r = run(B, decode);
        const d = maxRowDiff(r.logp, reference);
        t.diagnostic(`${name} ${decode ? 'decode' : 'prefill'}: max |Δ log p| vs float64 reference ${d.toExponential(2)}`);
        assert.ok(d < 2e-4, `${name} ${decode ? 'decode' : 'prefill'}: max |Δ log p| ${d}`);
        assert.deepEqual(r.routes, routes, `${name} ${decode ? 'decode' : 'prefill'}: router choice differs from the reference`);
      }
    }
  } finally {
    wasm.dispose();
  }
});

test('MoE decode equals batched prefill past the window on both backends (≤ 1e-4 in logits)', () => {
  const wasm = new WasmBackend({ threads: 2, minParallelWork: 1 });
  try {
    for (const B of [new ReferenceBackend(), wasm] as Backend[]) {
      const { model } = loadModel(dir, B, { tokenizer: false });
      const V = model.vocabSize;
      const batched = new Session(model, { contextLength: 80, prefillBatch: 40, qChunk: 8 }).prefill(ids, { all: true }).slice();
      const stepper = new Session(model, { contextLength: 80 });
      let worst = 0;
      ids.forEach((id, t) => {
        worst = Math.max(worst, maxAbsDiff(stepper.step(id), batched.subarray(t * V, (t + 1) * V)));
      });
      assert.ok(worst <= 1e-4, `${B.name}: max |Δ logit| decode vs prefill ${worst}`);
      model.close?.();
    }
  } finally {
    wasm.dispose();
  }
});

test('route: softmax, top k with ties to the lower index, renormalised, times the expert scale', () => {
  // Two tokens over 4 experts: probabilities from known logits.
  const logits = new Float32Array([0, Math.log(3), Math.log(2), Math.log(2), 1, 1, 1, 1]);
  const experts = new Int32Array(4);
  const weights = new Float32Array(4);
  route(logits, 2, 4, 2, new Float32Array([1, 0.5, 2, 4]), experts, weights);
  // Token 0: p ∝ 1, 3, 2, 2 → experts 1 then 2 (tie with 3 goes to the lower index); kept 5/8.
  assert.deepEqual(Array.from(experts.subarray(0, 2)), [1, 2]);
  assert.ok(Math.abs(weights[0] - (3 / 5) * 0.5) < 1e-7 && Math.abs(weights[1] - (2 / 5) * 2) < 1e-7, `${weights}`);
  // Token 1: all equal → experts 0 and 1, each 1/2 of the kept mass.
  assert.deepEqual(Array.from(experts.subarray(2, 4)), [0, 1]);
  assert.ok(Math.abs(weights[2] - 0.5) < 1e-7 && Math.abs(weights[3] - 0.25) < 1e-7, `${weights}`);
});

test('one expert of a stacked tensor, sliced in every weight format, decodes to the same rows as the whole stack', () => {
  const E = 3, rows = 8, cols = 64;
  const values = new Float32Array(E * rows * cols).map((_, i) => Math.sin(i * 0.37) * (1 + (i % 7)));
  const whole = { name: 'stack', shape: [E, rows, cols], format: { kind: 'f32' as const }, data: new Uint8Array(values.buffer), source: 'test' };
  for (const f of ['f32', 'bf16', 'f16', 'int8:32', 'int8:c', 'int8:t', 'int4:32', 'int4:c', 'lut4:4', 'lut6:8', 'lut3:0']) {
    const enc = encodeTensor(whole, parseFormat(f, 'test'));
    const all = dequantize({ ...enc, source: 'test' });
    for (let e = 0; e < E; e++) {
      const one = dequantize(sliceRows({ ...enc, source: 'test' }, e * rows, (e + 1) * rows, `stack[${e}]`));
      assert.equal(maxAbsDiff(one, all.subarray(e * rows * cols, (e + 1) * rows * cols)), 0, `${f}: expert ${e}`);
    }
  }
  const lut = encodeTensor(whole, parseFormat('lut4:3', 'test'));
  assert.throws(() => sliceRows({ ...lut, source: 'test' }, rows, 2 * rows, 'x'), /rows 8\.\.16 do not fall on its 3-row table/);
});

test('per-channel and per-block scales quantize each expert of a stack on its own; one scale per stack does not', () => {
  const E = 6, rows = 8, cols = 64;
  const base = new Float32Array(E * rows * cols).map((_, i) => Math.sin(i * 0.61) * 0.1);
  const withOutlier = base.slice();
  withOutlier[3 * rows * cols + 5 * cols + 17] = 20; // one weight of expert 3, 200× the others
  const tensor = (v: Float32Array) => ({ name: 'stack', shape: [E, rows, cols], format: { kind: 'f32' as const }, data: new Uint8Array(v.buffer), source: 'test' });
  for (const f of ['int8:c', 'int8:32', 'int4:32', 'lut4:8', 'int8:t']) {
    const a = encodeTensor(tensor(base), parseFormat(f, 'test'));
    const b = encodeTensor(tensor(withOutlier), parseFormat(f, 'test'));
    const changed: number[] = [];
    for (let e = 0; e < E; e++) {
      const da = dequantize(sliceRows({ ...a, source: 't' }, e * rows, (e + 1) * rows, 'x'));
      const db = dequantize(sliceRows({ ...b, source: 't' }, e * rows, (e + 1) * rows, 'x'));
      if (e !== 3 && maxAbsDiff(da, db) > 0) changed.push(e);
    }
    if (f === 'int8:t') assert.deepEqual(changed, [0, 1, 2, 4, 5], 'one scale for the stack: the outlier coarsens every expert');
    else assert.deepEqual(changed, [], `${f}: experts other than 3 changed`);
  }
  // int8:e / int4:e: one scale per expert, stored per channel. Each expert is exactly that expert
  // quantized alone with one scale, and only expert 3 moves with its outlier.
  for (const kind of ['int8', 'int4'] as const) {
    const perChannel = { kind, group: 'c' as const };
    const a = encodeTensor(tensor(base), perChannel, rows);
    const b = encodeTensor(tensor(withOutlier), perChannel, rows);
    assert.equal(a.format, perChannel);
    const changed: number[] = [];
    for (let e = 0; e < E; e++) {
      const da = dequantize(sliceRows({ ...a, source: 't' }, e * rows, (e + 1) * rows, 'x'));
      const db = dequantize(sliceRows({ ...b, source: 't' }, e * rows, (e + 1) * rows, 'x'));
      if (maxAbsDiff(da, db) > 0) changed.push(e);
      const alone = new Float32Array(withOutlier.subarray(e * rows * cols, (e + 1) * rows * cols));
      const single = encodeTensor({ name: 'one', shape: [rows, cols], format: { kind: 'f32' }, data: new Uint8Array(alone.buffer), source: 'test' }, { kind, group: 't' });
      assert.equal(maxAbsDiff(db, dequantize({ ...single, source: 't' })), 0, `${kind}:e expert ${e} = that expert with one scale`);
      const s = b.scales!.subarray(e * rows, (e + 1) * rows);
      assert.ok(s.every((x) => x === s[0]), `${kind}:e: one scale within expert ${e}`);
    }
    assert.deepEqual(changed, [3], `${kind}:e: only the expert with the outlier changes`);
  }
});

test('convert --quant experts=int8:e: one scale per expert, stored as int8:c; the router and dense parts stay as stored', async () => {
  const pkg = join(root, 'per-expert');
  const meta = await convert({ src: dir, out: pkg, plan: buildPlan({ quant: ['experts=int8:e'], weightThreshold: 0 }), command: 'test' });
  assert.equal(meta.quantization.quant_experts, 'int8:e');
  const p = new PackageSource(pkg);
  try {
    const w = p.load('model.layers.0.experts.gate_up_proj');
    assert.equal(formatName(w.format), 'int8:c');
    const [E, rows] = w.shape;
    for (let e = 0; e < E; e++) {
      const s = w.scales!.subarray(e * rows, (e + 1) * rows);
      assert.ok(s.every((x) => x === s[0]), `expert ${e}: one scale`);
    }
    assert.ok(new Set(Array.from(w.scales!)).size > 1, 'experts have their own scales');
    assert.equal(formatName(p.format('model.layers.0.router.proj.weight')), formatName(ck.format('model.layers.0.router.proj.weight')));
    assert.equal(formatName(p.format('model.layers.0.mlp.down_proj.weight')), formatName(ck.format('model.layers.0.mlp.down_proj.weight')));
  } finally {
    p.close();
  }
  const { model } = loadModel(pkg, new ReferenceBackend({ activations: 'f32' }), { tokenizer: false });
  try {
    const out = new Session(model, { contextLength: 64 }).prefill(ids.slice(0, 16), { all: true });
    assert.ok(out.every(Number.isFinite));
  } finally {
    model.close?.();
  }
});

test('bench on a MoE package: top-k of E experts read per token; llama.cpp gets the same weights when every matrix and stack shares a ggml type (the router goes as F32)', async () => {
  const pkg = join(root, 'bench-int8');
  await convert({ src: dir, out: pkg, plan: buildPlan({ quant: ['all=int8:32'], weightThreshold: 0 }), command: 'test' });
  assert.equal(exportTypeFor(matrixFormats(pkg)), 'q8_0');
  const { model } = loadModel(pkg, new ReferenceBackend(), { tokenizer: false });
  try {
    const wb = weightBytes(pkg, model);
    const E = cfg.numExperts!, k = cfg.topKExperts!, F = cfg.moeIntermediateSize!, H = cfg.hiddenSize;
    // Each layer holds E experts of gate, up and down (3·F·H weights each) and reads k of them.
    assert.equal(wb.paramsResident - wb.paramsPerToken, cfg.numLayers * (E - k) * 3 * F * H);
    assert.ok(wb.perToken < wb.resident);
  } finally {
    model.close?.();
  }
  // Experts per channel beside bf16 attention: no single ggml type holds both; the stack is named.
  const mixed = join(root, 'bench-mixed');
  await convert({ src: dir, out: mixed, plan: buildPlan({ quant: ['experts=int8:c'], weightThreshold: 0 }), command: 'test' });
  assert.throws(() => exportTypeFor(matrixFormats(mixed)), /int8:c \(model\.layers\.0\.experts\.(gate_up|down)_proj/);
});

test('--expert-outliers gives expert stacks heavy tails that one scale per stack cannot hold', async () => {
  const out = join(root, 'outliers');
  await writeFixture(out, 'tiny-gemma4-moe', 11, { expertOutliers: 10 });
  const src = Checkpoint.open(out);
  const w = src.load('model.layers.0.experts.gate_up_proj');
  const plain = dequantize(Checkpoint.open(dir).load('model.layers.0.experts.gate_up_proj'));
  const heavy = dequantize(w);
  src.close();
  const ratio = (v: Float32Array) => {
    let mx = 0, ss = 0;
    for (const x of v) (mx = Math.max(mx, Math.abs(x))), (ss += x * x);
    return mx / Math.sqrt(ss / v.length);
  };
  assert.ok(ratio(heavy) > 2 * ratio(plain), `max|W|/RMS ${ratio(heavy)} vs ${ratio(plain)} without outliers`);
  const relErr = (f: string) => {
    const d = dequantize({ ...encodeTensor(w, parseFormat(f, 'test')), source: 't' });
    let e = 0, s = 0;
    for (let i = 0; i < d.length; i++) (e += (d[i] - heavy[i]) ** 2), (s += heavy[i] ** 2);
    return Math.sqrt(e / s);
  };
  assert.ok(relErr('int8:t') > 3 * relErr('int8:c'), `relative error per stack ${relErr('int8:t')} vs per channel ${relErr('int8:c')}`);
  // One scale per expert sits between: every expert holds outliers, so it gains little over one per stack.
  const d = dequantize({ ...encodeTensor(w, { kind: 'int8', group: 'c' }, w.shape[1]), source: 't' });
  let e = 0, s = 0;
  for (let i = 0; i < d.length; i++) (e += (d[i] - heavy[i]) ** 2), (s += heavy[i] ** 2);
  const perExpert = Math.sqrt(e / s);
  assert.ok(perExpert <= relErr('int8:t') && perExpert > 2 * relErr('int8:c'), `per expert ${perExpert}, per stack ${relErr('int8:t')}, per channel ${relErr('int8:c')}`);
});
