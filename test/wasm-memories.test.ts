// Weights past one WebAssembly memory (4 GiB at most): the wasm backend puts them in further
// memories, each with a kernels instance on every thread, and copies a matmul's input and output
// across. A small weightsPerMemory spreads a tiny model over many memories; its logits must be
// the ones of the same model in one memory, bit for bit, in prefill (the GEMM, quantized on the
// pool) and decode (the GEMV), on one thread and on two (whose workers are replaced as memories
// are added), for every kind of weight (bf16, int8, int4, lut4, lut6 repacked to int8 and packed
// in the planar layout, expert slices).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { WasmBackend, type WasmBackendOptions } from '../src/backend/wasm/index.js';
import { convert } from '../src/quant/convert.js';
import { buildPlan } from '../src/quant/plan.js';
import { loadModel } from '../src/runtime/load.js';
import { weightBytes } from '../src/bench/weights.js';
import { Session } from '../src/runtime/session.js';
import { writeFixture } from '../src/model/fixture.js';
import { DEFAULT_MODEL } from '../src/cli/common.js';
import { tinyFixture, tokenSequence } from './helpers.js';

const fx = await tinyFixture(5);
after(() => fx.cleanup());

/** Logits of a 9-token prefill, then of 3 decode steps, and how many memories the weights took. */
function run(dir: string, opts: WasmBackendOptions): { logits: Float32Array[]; memories: number } {
  const B = new WasmBackend(opts);
  try {
    const { model } = loadModel(dir, B, { tokenizer: false });
    const s = new Session(model, { contextLength: 64 });
    const ids = tokenSequence(12, 7).map((id) => id % model.vocabSize);
    const logits = [Float32Array.from(s.prefill(ids.slice(0, 9)))];
    for (const id of ids.slice(9)) logits.push(Float32Array.from(s.step(id)));
    s.dispose();
    return { logits, memories: B.memories };
  } finally {
    B.dispose();
  }
}

const models: [string, () => Promise<string>, WasmBackendOptions?][] = [
  ['demo (bf16)', async () => DEFAULT_MODEL],
  ['tiny int8:32', () => pkg('all=int8:32')],
  ['tiny int4:32', () => pkg('all=int4:32')],
  ['tiny lut4:4 attention, lut6:4 MLP', () => pkg('attn=lut4:4', 'ffn=lut6:4')],
  ['tiny lut4:4 attention, lut6:4 MLP kept packed', () => pkg('attn=lut4:4', 'ffn=lut6:4'), { repack: false }],
  ['tiny-gemma4-moe (bf16; experts prepared one by one)', async () => {
    const dir = join(fx.root, 'moe');
    await writeFixture(dir, 'tiny-gemma4-moe', 3);
    return dir;
  }],
];

async function pkg(...quant: string[]): Promise<string> {
  const dir = join(fx.root, quant.join('-').replace(/[=:,]/g, '-'));
  if (existsSync(dir)) return dir;
  await convert({ src: fx.dir, out: dir, plan: buildPlan({ quant, weightThreshold: 0 }), command: 'test' });
  return dir;
}

for (const [name, make, extra] of models) {
  test(`weights spread over many WebAssembly memories give the logits of one memory: ${name}`, async () => {
    const dir = await make();
    for (const threads of [1, 2]) {
      // minParallelWork 1: every job goes to the pool, so the replaced workers take part in each.
      const one = run(dir, { threads, minParallelWork: 1, ...extra });
      const many = run(dir, { threads, minParallelWork: 1, weightsPerMemory: 64 << 10, ...extra });
      assert.equal(one.memories, 1);
      assert.ok(many.memories >= 4, `${threads} thread(s): ${many.memories} memories`);
      one.logits.forEach((row, i) => assert.deepEqual(many.logits[i], row, `${threads} thread(s), ${i === 0 ? 'prefill' : `decode step ${i}`}`));
    }
  });
}

test('weightsPerMemory must be a positive whole number of bytes', () => {
  for (const bad of [0, -1, 1.5, Number.NaN]) {
    assert.throws(() => new WasmBackend({ threads: 1, weightsPerMemory: bad }), /wasm backend: weightsPerMemory must be a positive number of bytes, got/);
  }
});

test('bench counts lut6 weights as the wasm backend holds them: int8 rows and a scale per row, or packed with repack off', async () => {
  const dir = await pkg('attn=lut4:4', 'ffn=lut6:4');
  const held: Record<string, number> = {};
  let cfg: { hiddenSize: number; intermediateSize: number; numLayers: number } | undefined;
  for (const repack of [true, false]) {
    const B = new WasmBackend({ threads: 1, repack });
    const { model } = loadModel(dir, B, { tokenizer: false });
    try {
      held[String(repack)] = weightBytes(dir, model).byFormat['lut6:4'];
      cfg = model.cfg;
    } finally {
      model.close?.();
      B.dispose();
    }
  }
  const { hiddenSize: H, intermediateSize: I, numLayers: L } = cfg!;
  // Per layer gate and up [I, H], down [H, I]: 2I + H rows.
  assert.equal(held.true, L * (3 * I * H + 4 * (2 * I + H)), 'a byte a weight, an f32 scale a row');
  assert.equal(held.false, L * (2 * I * ((H * 6) / 8) + H * ((I * 6) / 8) + ((2 * I + H) / 4) * 64 * 4), '6 bits a weight, a table of 64 f32 entries per 4 rows');
});
