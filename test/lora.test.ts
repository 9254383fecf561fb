// LoRA adapters: the shipped demo adapter against PyTorch's forward, merged = unmerged, blends,
// rslora scaling, batched sessions with different adapters, and one-line errors for bad adapters.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync, readFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel as loadEngine } from '../src/runtime/load.js';
import { ReferenceBackend } from '../src/backend/reference/index.js';
import { WasmBackend } from '../src/backend/wasm/index.js';
import type { Backend } from '../src/backend/backend.js';
import { Session } from '../src/runtime/session.js';
import { SafetensorsFile, writeSafetensors } from '../src/io/safetensors.js';
import { readLoraAdapter, parseLoraSpec } from '../src/adapters/lora.js';
import { PreparedLora } from '../src/adapters/apply.js';
import { architectureOf } from '../src/arch/registry.js';
import { openWeightSource } from '../src/io/source.js';
import { convert } from '../src/quant/convert.js';
import { buildPlan } from '../src/quant/plan.js';
import { maxAbsDiff } from './helpers.js';
import { writeFixture } from '../src/model/fixture.js';
import { spawnSync } from 'node:child_process';
import { loadModel } from '../src/api/model.js';
import { CLI, startServer, postJson, getJson } from './server-helpers.js';

const DEMO = 'models/demo';
const ADAPTER = 'models/demo-lora';
const FIXTURE = 'test/fixtures/demo-lora-reference.safetensors';
const root = mkdtempSync(join(tmpdir(), 'lutra-lora-'));
after(() => rmSync(root, { recursive: true, force: true }));

function f32(file: SafetensorsFile, name: string): Float32Array {
  const b = file.read(name);
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
}

function manifest(dir = DEMO) {
  const src = openWeightSource(dir);
  try {
    return architectureOf(src.config).tensors(src.config, src);
  } finally {
    src.close();
  }
}

/** Logits at every position of `ids` (one prefill). */
function logitsOf(dir: string, backend: Backend, ids: number[], lora: { dir: string; weight: number }[] = []): Float32Array {
  const { model, lora: blend } = loadEngine(dir, backend, { tokenizer: false, lora });
  const s = new Session(model, { contextLength: 64, lora: blend });
  try {
    return s.prefill(ids, { all: true });
  } finally {
    s.dispose();
  }
}

/** Write a PEFT adapter folder. */
function writeAdapter(dir: string, config: Record<string, unknown>): string {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify(config));
  return dir;
}

async function writeAdapterWeights(dir: string, tensors: Record<string, { shape: number[]; data: Float32Array }>): Promise<void> {
  await writeSafetensors(
    join(dir, 'adapter_model.safetensors'),
    Object.entries(tensors).map(([name, t]) => ({ name, dtype: 'f32' as const, shape: t.shape, bytes: () => new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength) })),
  );
}

function rand(n: number, seed: number, amp: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = ((s / 2 ** 32) * 2 - 1) * amp;
  }
  return out;
}

const PEFT = (r: number, alpha: number, extra: Record<string, unknown> = {}) => ({
  peft_type: 'LORA', r, lora_alpha: alpha, target_modules: ['q_proj', 'v_proj', 'down_proj'], bias: 'none', use_rslora: false, ...extra,
});

/** A random adapter on q_proj, v_proj and down_proj of every layer of `model` (default the demo), rank r. */
async function randomAdapter(dir: string, r: number, alpha: number, seed: number, extra: Record<string, unknown> = {}, model = DEMO, modules = '(?:self_attn\\.(?:q|v)_proj|mlp\\.down_proj)'): Promise<string> {
  const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const t of manifest(model)) {
    const m = new RegExp(`^(model\\.layers\\.\\d+\\.${modules})\\.weight$`).exec(t.name);
    if (!m) continue;
    const [out, inF] = t.shape;
    tensors[`base_model.model.${m[1]}.lora_A.weight`] = { shape: [r, inF], data: rand(r * inF, seed++, 0.05) };
    tensors[`base_model.model.${m[1]}.lora_B.weight`] = { shape: [out, r], data: rand(out * r, seed++, 0.05) };
  }
  writeAdapter(dir, PEFT(r, alpha, { target_modules: [...new Set(Object.keys(tensors).map((n) => n.split('.').at(-3)!))], ...extra }));
  await writeAdapterWeights(dir, tensors);
  return dir;
}

test('the shipped demo adapter gives PyTorch float64 logits within 1e-4 (reference and wasm, f32 activations), and moves them', () => {
  const ref = SafetensorsFile.open(FIXTURE);
  try {
    for (const backend of [new ReferenceBackend({ activations: 'f32' }), new WasmBackend({ threads: 2, activations: 'f32' })] as Backend[]) {
      try {
        for (const p of [0, 1]) {
          const ids = Array.from(f32(ref, `ids_${p}`));
          const want = f32(ref, `logits_${p}`);
          const got = logitsOf(DEMO, backend, ids, [{ dir: ADAPTER, weight: 1 }]);
          const d = maxAbsDiff(got, want);
          assert.ok(d <= 1e-4, `${backend.name} prompt ${p}: max |Δlogit| ${d} against PyTorch`);
          const V = want.length / ids.length;
          const baseWant = f32(ref, `base_logits_${p}`);
          const base = logitsOf(DEMO, backend, ids).subarray((ids.length - 1) * V);
          assert.ok(maxAbsDiff(base, baseWant) <= 1e-4, `${backend.name} prompt ${p}: base logits against PyTorch`);
          // The adapter acts: with and without it differ far beyond the tolerance.
          assert.ok(maxAbsDiff(want.subarray((ids.length - 1) * V), baseWant) > 0.1, 'the adapter changes the last logits');
        }
      } finally {
        backend.dispose?.();
      }
    }
  } finally {
    ref.close();
  }
});

test('convert --lora (merged into f32 weights) equals the unmerged adapter within 1e-5; merged at bf16 moves by the rounding only', async () => {
  const ids = [2, 45, 300, 17, 998, 4000, 12, 7, 81, 2600];
  const merged = join(root, 'merged-f32');
  await convert({ src: DEMO, out: merged, plan: buildPlan({ quant: ['attn=f32', 'ffn=f32'], weightThreshold: 0 }), command: 'test', lora: [{ dir: ADAPTER, weight: 1 }] });
  const b = new ReferenceBackend({ activations: 'f32' });
  const unmerged = logitsOf(DEMO, b, ids, [{ dir: ADAPTER, weight: 1 }]);
  const d = maxAbsDiff(logitsOf(merged, b, ids), unmerged);
  assert.ok(d <= 1e-5, `merged f32 vs unmerged: ${d}`);
  // Kept in its source format (bf16), the merged weight is rounded: close, not equal, and nearer than the base.
  const mergedBf16 = join(root, 'merged-bf16');
  await convert({ src: DEMO, out: mergedBf16, plan: buildPlan({ quant: [], weightThreshold: 0 }), command: 'test', lora: [{ dir: ADAPTER, weight: 1 }] });
  const db = maxAbsDiff(logitsOf(mergedBf16, b, ids), unmerged);
  const dBase = maxAbsDiff(logitsOf(DEMO, b, ids), unmerged);
  assert.ok(db > 0 && db < dBase / 4, `bf16 merge ${db}, base ${dBase}`);
});

test('two adapters blended at w1, w2 equal one adapter whose change is w1·ΔW1 + w2·ΔW2; rslora scales by alpha/sqrt(r)', async () => {
  const ids = [2, 100, 2000, 31, 5, 640, 77, 3000];
  const a1 = await randomAdapter(join(root, 'a1'), 4, 8, 11); // s = 2
  const a2 = await randomAdapter(join(root, 'a2'), 3, 6, 99, { use_rslora: true }); // s = 6/√3
  const w1 = 0.7;
  const w2 = -0.4;
  // The combined adapter: A stacked, B side by side with wᵢ·sᵢ folded in; alpha = r so its scale is 1.
  const read = (dir: string) => SafetensorsFile.open(join(dir, 'adapter_model.safetensors'));
  const f1 = read(a1);
  const f2 = read(a2);
  const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const name of f1.entries.keys()) {
    if (!name.endsWith('lora_A.weight')) continue;
    const mod = name.slice(0, -'lora_A.weight'.length);
    const A1 = f32(f1, name);
    const A2 = f32(f2, name);
    const B1 = f32(f1, mod + 'lora_B.weight');
    const B2 = f32(f2, mod + 'lora_B.weight');
    const inF = A1.length / 4;
    const out = B1.length / 4;
    const A = new Float32Array(7 * inF);
    A.set(A1);
    A.set(A2, 4 * inF);
    const B = new Float32Array(out * 7);
    for (let o = 0; o < out; o++) {
      for (let k = 0; k < 4; k++) B[o * 7 + k] = w1 * 2 * B1[o * 4 + k];
      for (let k = 0; k < 3; k++) B[o * 7 + 4 + k] = w2 * (6 / Math.sqrt(3)) * B2[o * 3 + k];
    }
    tensors[name] = { shape: [7, inF], data: A };
    tensors[mod + 'lora_B.weight'] = { shape: [out, 7], data: B };
  }
  f1.close();
  f2.close();
  const combined = writeAdapter(join(root, 'combined'), PEFT(7, 7));
  await writeAdapterWeights(combined, tensors);
  const b = new ReferenceBackend({ activations: 'f32' });
  const blend = logitsOf(DEMO, b, ids, [{ dir: a1, weight: w1 }, { dir: a2, weight: w2 }]);
  const one = logitsOf(DEMO, b, ids, [{ dir: combined, weight: 1 }]);
  assert.ok(maxAbsDiff(blend, one) <= 1e-5, `blend vs combined ${maxAbsDiff(blend, one)}`);
  assert.ok(maxAbsDiff(blend, logitsOf(DEMO, b, ids)) > 1e-2, 'the blend changes the logits');
  // rslora: the same tensors read without use_rslora get alpha/r instead (a different model).
  const plain = join(root, 'a2-plain');
  mkdirSync(plain);
  copyFileSync(join(a2, 'adapter_model.safetensors'), join(plain, 'adapter_model.safetensors'));
  writeFileSync(join(plain, 'adapter_config.json'), JSON.stringify(PEFT(3, 6 * Math.sqrt(3))));
  const viaRs = logitsOf(DEMO, b, ids, [{ dir: a2, weight: 1 }]);
  const viaPlain = logitsOf(DEMO, b, ids, [{ dir: plain, weight: 1 }]); // alpha/r = 6√3/3 = 6/√3
  assert.ok(maxAbsDiff(viaRs, viaPlain) <= 1e-5, `rslora ${maxAbsDiff(viaRs, viaPlain)}`);
  const t = manifest();
  assert.equal(readLoraAdapter(a2, t).modules.values().next().value!.scale, 6 / Math.sqrt(3));
  assert.equal(readLoraAdapter(a1, t).modules.values().next().value!.scale, 2);
});

test('Gemma 4 (tiny-gemma4: KV-shared layers, K=V layers): the unmerged adapter equals the merged f32 conversion, both backends', async () => {
  const g4 = join(root, 'tiny-gemma4');
  await writeFixture(g4, 'tiny-gemma4', 3);
  const all = '(?:self_attn\\.[qkvo]_proj|mlp\\.(?:gate|up|down)_proj)';
  const adapter = await randomAdapter(join(root, 'g4-lora'), 4, 8, 77, {}, g4, all);
  const merged = join(root, 'g4-merged');
  await convert({ src: g4, out: merged, plan: buildPlan({ quant: ['attn=f32', 'ffn=f32'], weightThreshold: 0 }), command: 'test', lora: [{ dir: adapter, weight: 1 }] });
  const ids = [2, 10, 400, 33, 5000, 17, 6, 900, 71, 12];
  for (const b of [new ReferenceBackend({ activations: 'f32' }), new WasmBackend({ threads: 2, activations: 'f32' })] as Backend[]) {
    try {
      const unmerged = logitsOf(g4, b, ids, [{ dir: adapter, weight: 1 }]);
      const d = maxAbsDiff(logitsOf(merged, b, ids), unmerged);
      assert.ok(d <= 1e-4, `${b.name}: merged vs unmerged ${d}`);
      assert.ok(maxAbsDiff(logitsOf(g4, b, ids), unmerged) > 100 * Math.max(d, 1e-6), `${b.name}: the adapter acts`);
    } finally {
      b.dispose?.();
    }
  }
});

test('batched decode of sessions with different adapters (none, one, a blend) equals each decoded alone', async () => {
  const backend = new WasmBackend({ threads: 2 });
  try {
    const { model, tensors } = loadEngine(DEMO, backend, { tokenizer: false });
    const a1 = readLoraAdapter(ADAPTER, tensors);
    const a2 = readLoraAdapter(await randomAdapter(join(root, 'batch-a2'), 2, 4, 5), tensors);
    const blends: (PreparedLora | null)[] = [null, new PreparedLora(backend, [{ adapter: a1, weight: 1 }]), new PreparedLora(backend, [{ adapter: a1, weight: 0.5 }, { adapter: a2, weight: 1 }])];
    const prompts = [[2, 10, 20, 30], [2, 400, 500], [2, 7, 8, 9, 10, 11]];
    const alone = blends.map((l, i) => {
      const s = new Session(model, { contextLength: 32, lora: l });
      s.prefill(prompts[i]);
      const rows = [5, 6, 7].map((id) => s.step(id));
      s.dispose();
      return rows;
    });
    const sessions = blends.map((l, i) => {
      const s = new Session(model, { contextLength: 32, lora: l });
      s.prefill(prompts[i]);
      return s;
    });
    for (let k = 0; k < 3; k++) {
      const rows = Session.stepAll(sessions, [5 + k, 5 + k, 5 + k]);
      rows.forEach((r, i) => assert.ok(maxAbsDiff(r, alone[i][k]) <= 1e-4, `session ${i} step ${k}: ${maxAbsDiff(r, alone[i][k])}`));
    }
    assert.ok(maxAbsDiff(alone[0][0], alone[1][0]) > 1e-2 && maxAbsDiff(alone[1][0], alone[2][0]) > 1e-2, 'the adapters differ');
    for (const s of sessions) s.dispose();
  } finally {
    backend.dispose();
  }
});

test('a session changing adapters drops its cache (setLora)', () => {
  const backend = new ReferenceBackend();
  const { model, tensors } = loadEngine(DEMO, backend, { tokenizer: false });
  const l = new PreparedLora(backend, [{ adapter: readLoraAdapter(ADAPTER, tensors), weight: 1 }]);
  const s = new Session(model, { contextLength: 16 });
  s.prefill([2, 3, 4]);
  s.setLora(null);
  assert.equal(s.position, 3, 'same adapters: cache kept');
  s.setLora(l);
  assert.equal(s.position, 0, 'other adapters: cache dropped');
  assert.equal(s.lora, l);
});

test('bad adapters get one-line errors naming the file, field or tensor', async () => {
  const t = manifest();
  const good = JSON.parse(readFileSync(join(ADAPTER, 'adapter_config.json'), 'utf8'));
  const weights = join(ADAPTER, 'adapter_model.safetensors');
  let n = 0;
  const folder = (config: unknown, w: string | null = weights): string => {
    const dir = join(root, `bad-${n++}`);
    mkdirSync(dir);
    if (config !== undefined) writeFileSync(join(dir, 'adapter_config.json'), typeof config === 'string' ? config : JSON.stringify(config));
    if (w) copyFileSync(w, join(dir, 'adapter_model.safetensors'));
    return dir;
  };
  const expectError = (dir: string, re: RegExp) =>
    assert.throws(() => readLoraAdapter(dir, t), (e: Error) => {
      assert.match(e.message, re);
      assert.ok(!e.message.includes('\n'), 'one line');
      return e.name === 'LutraError';
    });
  expectError(join(root, 'nope'), /nope: LoRA adapter folder not found/);
  expectError(folder(undefined), /adapter_config\.json: missing/);
  expectError(folder('{'), /adapter_config\.json: the adapter config is not a JSON object/);
  expectError(folder({ ...good, r: 0 }), /adapter_config\.json: r is 0; expected a positive integer/);
  expectError(folder({ ...good, r: 4 }), /tensor "base_model\.model\.model\.layers\.0\.\S+\.lora_A\.weight" has shape \[8, \d+\]; expected \[4, \d+\]/);
  expectError(folder({ ...good, lora_alpha: 'x' }), /lora_alpha is "x"; expected a positive number/);
  expectError(folder({ ...good, use_dora: true }), /use_dora is true; DoRA adapters are not supported/);
  expectError(folder({ ...good, modules_to_save: ['lm_head'] }), /modules_to_save \["lm_head"\]/);
  expectError(folder({ ...good, target_modules: ['q_proj'] }), /module "model\.layers\.\d\.\S+" is not selected by adapter_config\.json's target_modules/);
  expectError(folder({ ...good, target_modules: 7 }), /target_modules is 7; expected a non-empty list/);
  expectError(folder({ ...good, peft_type: 'IA3' }), /peft_type "IA3"; only "LORA"/);
  expectError(folder(good, null), /adapter_model\.safetensors: missing/);
  const bin = folder(good, null);
  writeFileSync(join(bin, 'adapter_model.bin'), 'x');
  expectError(bin, /adapter_model\.bin: pickled PyTorch weights are not read/);
  // Tensor-level faults, written from the shipped tensors.
  const src = SafetensorsFile.open(weights);
  const shipped = [...src.entries.values()].map((e) => ({ name: e.name, shape: e.shape, dtype: e.dtype, data: src.read(e.name) }));
  src.close();
  const withTensors = async (edit: (ts: typeof shipped) => typeof shipped) => {
    const dir = folder(good, null);
    await writeSafetensors(join(dir, 'adapter_model.safetensors'), edit(shipped.map((x) => ({ ...x }))).map((x) => ({ name: x.name, dtype: x.dtype, shape: x.shape, bytes: () => x.data })));
    return dir;
  };
  expectError(await withTensors((ts) => ts.filter((x) => !x.name.includes('layers.3.mlp.up_proj.lora_B'))), /module "model\.layers\.3\.mlp\.up_proj" has lora_A but no lora_B/);
  expectError(await withTensors((ts) => ts.filter((x) => !x.name.includes('layers.3.mlp.up_proj'))), /no lora_A\/lora_B for "model\.layers\.3\.mlp\.up_proj", which adapter_config\.json's target_modules/);
  expectError(
    await withTensors((ts) => ts.map((x) => (x.name.includes('layers.0.') ? { ...x, name: x.name.replace('layers.0.', 'layers.99.') } : x))),
    /adapts "model\.layers\.99\.\S+", which is not an attention or feed-forward matrix of this model/,
  );
  expectError(
    await withTensors((ts) => [...ts, { name: 'base_model.model.model.embed_tokens.lora_embedding_A', shape: [1], dtype: 'f32' as const, data: new Uint8Array(4) }]),
    /LoRA on embeddings is not supported/,
  );
});

test('adapter specs: DIR, DIR:W, and the weight checked', () => {
  assert.deepEqual(parseLoraSpec('a/b'), { dir: 'a/b', weight: 1 });
  assert.deepEqual(parseLoraSpec('a/b:0.25'), { dir: 'a/b', weight: 0.25 });
  assert.deepEqual(parseLoraSpec('a/b:-1e-1'), { dir: 'a/b', weight: -0.1 });
  assert.deepEqual(parseLoraSpec('a:b/c'), { dir: 'a:b/c', weight: 1 });
  assert.throws(() => parseLoraSpec(':2'), /--lora ":2": expected DIR or DIR:WEIGHT/);
});


test('the server serves two adapters to interleaved requests with the library\'s outputs; /v1/models lists them', async () => {
  const mix = await randomAdapter(join(root, 'server-mix'), 2, 4, 21);
  const adapters = { fortune: ADAPTER, mix: [`${ADAPTER}:0.5`, mix] };
  const server = await startServer(['--parallel', '3', '--threads', '2', '--no-page', '--adapter', `fortune=${ADAPTER}`, '--adapter', `mix=${ADAPTER}:0.5,${mix}`]);
  const lib = await loadModel(DEMO, { threads: 2, adapters });
  try {
    const models = await getJson(`${server.url}/v1/models`);
    assert.deepEqual(models.data.map((m: { id: string }) => m.id), ['demo', 'fortune', 'mix']);
    const prompts = ['A fool and his money', 'Love is', 'And the LORD said', 'The best way to'];
    // [request fields, the library's adapter option]
    const ways: [Record<string, unknown>, string | null | undefined][] = [[{}, undefined], [{ model: 'fortune' }, 'fortune'], [{ adapter: 'mix' }, 'mix'], [{ model: 'demo', adapter: null }, null]];
    const jobs = prompts.flatMap((prompt) => ways.map(([fields, adapter]) => ({ prompt, fields, adapter })));
    const served = await Promise.all(
      jobs.map((j) => postJson(`${server.url}/v1/completions`, { prompt: j.prompt, max_tokens: 20, temperature: 0, ...j.fields })),
    );
    const texts = new Set<string>();
    for (let i = 0; i < jobs.length; i++) {
      assert.equal(served[i].status, 200, JSON.stringify(served[i].json));
      const want = await lib.complete(jobs[i].prompt, { maxTokens: 20, temperature: 0, adapter: jobs[i].adapter });
      assert.equal(served[i].json.choices[0].text, want.text, `${jobs[i].prompt} with ${JSON.stringify(jobs[i].fields)}`);
      assert.equal(served[i].json.model, typeof jobs[i].adapter === 'string' ? jobs[i].adapter : 'demo');
      if (jobs[i].prompt === prompts[0]) texts.add(want.text);
    }
    assert.ok(texts.size >= 2, 'adapters change the text');
    const bad = await postJson(`${server.url}/v1/completions`, { prompt: 'x', adapter: 'nope' });
    assert.equal(bad.status, 400);
    assert.match(bad.json.error.message, /adapter: no adapter named "nope"; this server has fortune, mix/);
    const clash = await postJson(`${server.url}/v1/completions`, { prompt: 'x', model: 'fortune', adapter: 'mix' });
    assert.equal(clash.status, 400);
    assert.match(clash.json.error.message, /contradicts model 'fortune'/);
  } finally {
    lib.dispose();
    await server.stop();
  }
});

test('lutra generate --lora runs the adapter; a bad --lora is a one-line error', () => {
  const run = (args: string[]) => spawnSync(process.execPath, [CLI, 'generate', '--prompt', 'A fool and his money', '-n', '12', '--threads', '2', ...args], { encoding: 'utf8' });
  const base = run([]);
  const adapted = run(['--lora', ADAPTER]);
  assert.equal(base.status, 0, base.stderr);
  assert.equal(adapted.status, 0, adapted.stderr);
  assert.notEqual(adapted.stdout, base.stdout);
  const bad = run(['--lora', join(root, 'missing-adapter:0.5')]);
  assert.equal(bad.status, 1);
  assert.match(bad.stderr.trim(), /^lutra: .*missing-adapter: LoRA adapter folder not found/);
  assert.equal(bad.stderr.trim().split('\n').length, 1, bad.stderr);
});

test('addProduct (the LoRA up-projection): wasm equals the reference on awkward sizes, both builds', async () => {
  const { ReferenceBackend: Ref } = await import('../src/backend/reference/index.js');
  const ref = new Ref();
  for (const simd of ['baseline', 'relaxed'] as const) {
    const w = new WasmBackend({ threads: 1, simd });
    try {
      for (const [T, k, n] of [[1, 1, 1], [1, 8, 2048], [3, 7, 17], [2, 13, 33], [5, 16, 100], [1, 3, 4]]) {
        const g = rand(T * k + k * n + T * n, T * 1000 + k * 10 + n, 1);
        const x = w.alloc(T * k);
        x.set(g.subarray(0, T * k));
        const wt = w.alloc(k * n);
        wt.set(g.subarray(T * k, T * k + k * n));
        const acc = w.alloc(T * n);
        acc.set(g.subarray(T * k + k * n));
        const want = Float32Array.from(acc);
        ref.addProduct(want, x, T, k, wt, n);
        w.addProduct(acc, x, T, k, wt, n);
        assert.ok(maxAbsDiff(acc, want) <= 1e-6 * Math.max(1, k), `${simd} T ${T} k ${k} n ${n}: ${maxAbsDiff(acc, want)}`);
      }
    } finally {
      w.dispose();
    }
  }
});
