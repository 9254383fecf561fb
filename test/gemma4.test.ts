// Gemma 4 (dense) on the tiny fixture, which exercises per-layer embeddings, KV sharing, double-wide
// MLPs, K=V full layers, two head sizes, proportional RoPE, softcapping and layer scalars ≠ 1:
// lutra against an independent float64 reference of the HF semantics, decode against batched
// prefill past the sliding window, per-layer embeddings read from disk against the in-memory
// lookup, and both backends.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeFixture } from '../src/model/fixture.js';
import { Checkpoint } from '../src/io/checkpoint.js';
import { loadModel } from '../src/runtime/load.js';
import { ReferenceBackend, dequantize } from '../src/backend/reference/index.js';
import { WasmBackend } from '../src/backend/wasm/index.js';
import type { Backend } from '../src/backend/backend.js';
import { Session } from '../src/runtime/session.js';
import { Gemma4Model } from '../src/arch/gemma4/model.js';
import type { Gemma4Config } from '../src/arch/config-types.js';
import type { WeightSource } from '../src/model/forward.js';
import { logSoftmax } from '../src/verify/metrics.js';
import { gemma4ReferenceLogProbs } from './gemma4-reference.js';
import { maxAbsDiff, tokenSequence } from './helpers.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import { LutraError } from '../src/util/errors.js';
import { convert } from '../src/quant/convert.js';
import { buildPlan } from '../src/quant/plan.js';
import { F32_NUMERICS } from '../src/fp16/numerics.js';
import { auditFp16 } from '../src/fp16/audit.js';

const root = mkdtempSync(join(tmpdir(), 'lutra-gemma4-'));
const dir = join(root, 'tiny-gemma4');
await writeFixture(dir, 'tiny-gemma4', 7);
process.on('exit', () => rmSync(root, { recursive: true, force: true }));

const ck = Checkpoint.open(dir);
const cfg = ck.config as Gemma4Config;
ck.close();
const W = cfg.slidingWindow;
const ids = tokenSequence(5 * W, 41); // 40 positions: the sliding rings wrap five times

test('the tiny Gemma 4 fixture has every feature of the dense model', () => {
  assert.equal(cfg.modelType, 'gemma4_text');
  assert.ok(cfg.hiddenSizePerLayerInput > 0, 'per-layer embeddings');
  const shared = cfg.layers.filter((l, i) => l.kvSource !== i);
  assert.ok(shared.some((l) => l.sliding) && shared.some((l) => !l.sliding), 'sliding and full KV-shared layers');
  assert.ok(shared.every((l) => l.intermediateSize === 2 * cfg.intermediateSize), 'double-wide MLP on shared layers');
  assert.ok(cfg.layers.some((l, i) => l.kEqV && l.kvSource === i), 'a K=V full layer with its own cache');
  assert.notEqual(cfg.headDim, cfg.globalHeadDim, 'two head sizes');
  assert.ok(cfg.ropeGlobal.rotaryFraction < 1, 'proportional RoPE');
  assert.equal(cfg.finalLogitSoftcapping, 30);
});

/** The checkpoint's weights as f32, by name (bf16 widened exactly). */
function weights(): (name: string) => Float32Array {
  const src = Checkpoint.open(dir);
  const cache = new Map<string, Float32Array>();
  return (name) => {
    let w = cache.get(name);
    if (!w) cache.set(name, (w = dequantize(src.load(name))));
    return w;
  };
}

function lutraLogProbs(backend: Backend, opts: { decode?: boolean; prefillBatch?: number } = {}): Float64Array[] {
  const { model } = loadModel(dir, backend, { tokenizer: false });
  try {
    const s = new Session(model, { contextLength: 64, prefillBatch: opts.prefillBatch ?? 16, qChunk: 8 });
    if (opts.decode) return ids.map((id) => logSoftmax(s.step(id)));
    const all = s.prefill(ids, { all: true });
    const V = model.vocabSize;
    return ids.map((_, t) => logSoftmax(all.subarray(t * V, (t + 1) * V)));
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

const reference = gemma4ReferenceLogProbs(cfg, weights(), ids);

test('reference backend matches the independent float64 Gemma 4 reference (prefill and decode)', (t) => {
  const prefill = lutraLogProbs(new ReferenceBackend({ activations: 'f32' }));
  const decode = lutraLogProbs(new ReferenceBackend({ activations: 'f32' }), { decode: true });
  const dp = maxRowDiff(prefill, reference);
  const dd = maxRowDiff(decode, reference);
  t.diagnostic(`max |Δ log p| vs float64 reference: prefill ${dp.toExponential(2)}, decode ${dd.toExponential(2)}`);
  assert.ok(dp < 2e-4, `prefill ${dp}`);
  assert.ok(dd < 2e-4, `decode ${dd}`);
});

test('decode equals batched prefill past the window on both backends (≤ 1e-4 in logits), batches larger than the ring', () => {
  const wasm = new WasmBackend({ threads: 2, minParallelWork: 1 });
  try {
    for (const B of [new ReferenceBackend(), wasm] as Backend[]) {
      const { model } = loadModel(dir, B, { tokenizer: false });
      const V = model.vocabSize;
      const batched = new Session(model, { contextLength: 64, prefillBatch: 24, qChunk: 8 }).prefill(ids, { all: true }).slice();
      const stepper = new Session(model, { contextLength: 64 });
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

test('per-layer embedding rows read from disk equal the in-memory lookup, and the table is never loaded', () => {
  const src = Checkpoint.open(dir);
  const loaded: string[] = [];
  const inMemory: WeightSource = {
    dir: src.dir, config: src.config, rawConfig: src.rawConfig,
    has: (n) => src.has(n), names: () => src.names(), shape: (n) => src.shape(n), format: (n) => src.format(n),
    load: (n, s) => src.load(n, s), close: () => {},
  };
  const onDisk: WeightSource = { ...inMemory, rowReader: (n) => src.rowReader(n), load: (n, s) => (loaded.push(n), src.load(n, s)) };
  const run = (ws: WeightSource) => {
    const m = new Gemma4Model(cfg, new ReferenceBackend(), ws);
    const out = new Session(m, { contextLength: 64, prefillBatch: 16 }).prefill(ids, { all: true }).slice();
    m.close();
    return out;
  };
  const a = run(inMemory);
  const b = run(onDisk);
  src.close();
  assert.equal(maxAbsDiff(a, b), 0);
  assert.ok(!loaded.includes('model.embed_tokens_per_layer.weight'), 'the per-layer table was loaded whole');
});

test('wasm backend agrees with the reference backend', () => {
  const wasm = new WasmBackend({ threads: 2, minParallelWork: 1 });
  try {
    const a = lutraLogProbs(wasm);
    const d = maxRowDiff(a, reference);
    assert.ok(d < 2e-3, `wasm vs float64 reference: ${d}`);
  } finally {
    wasm.dispose();
  }
});

/** A copy of the fixture whose safetensors file is rewritten by `edit` (tensors dropped or replaced). */
async function damagedCopy(name: string, edit: (t: { name: string; shape: number[]; data: Uint8Array }) => { shape: number[]; data: Uint8Array } | null): Promise<string> {
  const out = join(root, name);
  mkdirSync(out);
  for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(dir, f), join(out, f));
  const src = Checkpoint.open(dir);
  const tensors = src.names().flatMap((n) => {
    const w = src.load(n);
    const e = edit({ name: n, shape: w.shape, data: w.data });
    return e ? [{ name: n, dtype: 'bf16' as const, shape: e.shape, bytes: () => e.data }] : [];
  });
  await writeSafetensors(join(out, 'model.safetensors'), tensors);
  src.close();
  return out;
}

test('a Gemma 4 checkpoint without a layer_scalar, or with a per-layer table of the wrong width, is a one-line error naming the tensor', async () => {
  const noScalar = await damagedCopy('no-scalar', (t) => (t.name === 'model.layers.3.layer_scalar' ? null : t));
  assert.throws(() => loadModel(noScalar, new ReferenceBackend(), { tokenizer: false }), (e: unknown) =>
    e instanceof LutraError && !e.message.includes('\n') && /tensor "model\.layers\.3\.layer_scalar" is missing/.test(e.message));
  const P = cfg.hiddenSizePerLayerInput;
  const L = cfg.numLayers;
  const narrow = await damagedCopy('narrow-ple', (t) => {
    if (t.name !== 'model.embed_tokens_per_layer.weight') return t;
    const rows = t.shape[0];
    const cols = L * P - 8;
    const data = new Uint8Array(rows * cols * 2);
    for (let r = 0; r < rows; r++) data.set(t.data.subarray(r * L * P * 2, r * L * P * 2 + cols * 2), r * cols * 2);
    return { shape: [rows, cols], data };
  });
  assert.throws(() => loadModel(narrow, new ReferenceBackend(), { tokenizer: false }), (e: unknown) =>
    e instanceof LutraError && !e.message.includes('\n') &&
    e.message.includes(`"model.embed_tokens_per_layer.weight" has shape [${cfg.vocabSizePerLayerInput},${L * P - 8}], expected [${cfg.vocabSizePerLayerInput},${L * P}]`) &&
    /hidden_size_per_layer_input/.test(e.message));
});

test('Gemma 4 α-scaling (convert --fp16-scale) is exact in f32: same logits, residual stream scaled by α', async () => {
  const out = join(root, 'scaled');
  const meta = await convert({ src: dir, out, plan: buildPlan({ quant: [], weightThreshold: 0 }), command: 'test', fp16Scale: { alpha: 0.25, chosenBy: 'test' } });
  assert.equal(meta.embed_scale, 2); // 0.25 × sqrt(64)
  const load = (d: string) => loadModel(d, new ReferenceBackend(), { tokenizer: false, numerics: F32_NUMERICS }).model;
  const a = load(dir);
  const b = load(out);
  const la = new Session(a, { contextLength: 64 }).prefill(ids, { all: true }).slice();
  const lb = new Session(b, { contextLength: 64 }).prefill(ids, { all: true });
  const d = maxAbsDiff(la, lb);
  assert.ok(d <= 1e-4, `max |Δlogit| ${d}`);
  const pa = auditFp16(a, [ids]);
  const pb = auditFp16(b, [ids]);
  for (let l = 0; l < pa.layers.length; l++) {
    const ratio = pb.layers[l].peaks.residual / pa.layers[l].peaks.residual;
    assert.ok(Math.abs(ratio - 0.25) < 1e-4, `layer ${l}: residual peak ratio ${ratio}`);
  }
  a.close?.();
  b.close?.();
});
