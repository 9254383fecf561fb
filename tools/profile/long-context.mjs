#!/usr/bin/env node
// Per-op time of decode steps at a long context (what a `lutra bench --context N` decode spends its
// time on), on the wasm backend: after a real prefill of N tokens in passes of 512 (--real, minutes at
// 16k), or over a KV cache filled with random values (the default: seconds; attention's cost does not
// depend on the values unless their scores spread very wide). Two rounds of the steps: the first
// shows what a freshly prefilled session pays, the second is the steady state.
//   node tools/profile/long-context.mjs MODEL_DIR [context=16384] [steps=16] [threads=2] [--kv f16|f32] [--real]
import { loadModel, makeBackend } from '../../dist/src/runtime/load.js';
import { Session } from '../../dist/src/runtime/session.js';
import { benchTokens } from '../../dist/src/bench/timing.js';

const args = process.argv.slice(2);
const flag = (name, dflt) => {
  const i = args.indexOf(name);
  if (i < 0) return dflt;
  const v = args[i + 1];
  args.splice(i, 2);
  return v;
};
const real = args.includes('--real');
if (real) args.splice(args.indexOf('--real'), 1);
const kv = flag('--kv', 'f16');
const [dir, ctxArg = '16384', stepsArg = '16', thArg = '2'] = args;
if (!dir) {
  console.error('usage: node tools/profile/long-context.mjs MODEL_DIR [context] [steps] [threads] [--kv f16|f32] [--real]');
  process.exit(1);
}
const ctx = Number(ctxArg), steps = Number(stepsArg);
const backend = makeBackend('wasm', { threads: Number(thArg) });
const { model } = loadModel(dir, backend, { tokenizer: false });
const totals = new Map();
for (const name of ['matmul', 'attention', 'rmsNorm', 'rope', 'geluMul', 'add', 'embed', 'scale', 'softcap']) {
  const f = backend[name];
  if (typeof f !== 'function') continue;
  backend[name] = function (...a) {
    const t0 = performance.now();
    const r = f.apply(this, a);
    const key = name === 'matmul' ? `matmul ${a[2].name.replace(/layers\.\d+\./, 'layers.*.')}` : name === 'attention' ? `attention window ${a[0].window}` : name;
    const e = totals.get(key) ?? { ms: 0, n: 0 };
    e.ms += performance.now() - t0;
    e.n++;
    totals.set(key, e);
    return r;
  };
}
const session = new Session(model, { contextLength: ctx + 2 * steps + 1, prefillBatch: 512, kvType: kv });
if (real) {
  const t0 = performance.now();
  session.prefill(benchTokens(ctx, model.vocabSize));
  const s = (performance.now() - t0) / 1000;
  console.log(`prefill ${ctx} tokens: ${s.toFixed(1)} s (${(ctx / s).toFixed(1)} tok/s)`);
} else {
  let seed = 1;
  for (const c of new Set(session.cache.layers)) {
    for (const a of [c.k, c.v]) {
      if (kv === 'f16') {
        const h = new Uint16Array(a.buffer, a.byteOffset, a.length * 2);
        for (let i = 0; i < h.length; i++) h[i] = 0x3000 + ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) >>> 22); // halves in [0.125, 0.5)
      } else for (let i = 0; i < a.length; i++) a[i] = ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32) - 0.5;
    }
  }
  session.cache.length = ctx; // positions 0..ctx-1 "cached"
}
const round = () => {
  totals.clear();
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) session.stepShared(5);
  return performance.now() - t0;
};
const first = round();
const ms = round();
console.log(`context ${ctx}, ${kv} KV cache, ${backend.threads} threads (${backend.simd} SIMD): first ${steps} steps ${first.toFixed(1)} ms, next ${steps} ${ms.toFixed(1)} ms (${((steps * 1000) / ms).toFixed(2)} tok/s)`);
let sum = 0;
for (const [k, v] of [...totals].sort((a, b) => b[1].ms - a[1].ms)) {
  sum += v.ms;
  console.log(`${k.padEnd(48)} ${v.ms.toFixed(1).padStart(8)} ms ${((100 * v.ms) / ms).toFixed(1).padStart(5)}%  ×${v.n}`);
}
console.log(`${'outside backend ops'.padEnd(48)} ${(ms - sum).toFixed(1).padStart(8)} ms`);
backend.dispose();
