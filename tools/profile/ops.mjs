#!/usr/bin/env node
// Per-op time profile of one prefill and N decode steps on the wasm backend: every Backend method
// is wrapped with a timer (matmuls keyed by matrix name). For finding where the time goes.
//   node tools/profile/ops.mjs MODEL_DIR [prefill=256] [decode=32] [threads]
import { loadModel, makeBackend } from '../../dist/src/runtime/load.js';
import { Session } from '../../dist/src/runtime/session.js';
import { benchTokens } from '../../dist/src/bench/timing.js';

const [dir, pArg = '256', dArg = '32', thArg] = process.argv.slice(2);
if (!dir) {
  console.error('usage: node tools/profile/ops.mjs MODEL_DIR [prefill] [decode] [threads]');
  process.exit(1);
}
const backend = makeBackend('wasm', thArg ? { threads: Number(thArg) } : {});
const { model } = loadModel(dir, backend, { tokenizer: false });
const totals = new Map();
let phase = 'prefill';
for (const name of ['matmul', 'matmuls', 'attention', 'rmsNorm', 'rope', 'geluMul', 'add', 'embed', 'roundToF16', 'scale', 'softcap']) {
  const f = backend[name];
  if (typeof f !== 'function') continue;
  backend[name] = function (...a) {
    const t0 = performance.now();
    const r = f.apply(this, a);
    const short = (m) => m.name.replace(/layers\.\d+\./, 'layers.*.').replace(/\[\d+\]/, '[*]');
    const what = name === 'matmul' ? `matmul ${short(a[2])}` : name === 'matmuls' ? `matmuls ${[...new Set(a[0].map((j) => short(j.w)))].join(' ')}` : name;
    const key = `${phase} ${what}`;
    const e = totals.get(key) ?? { ms: 0, n: 0 };
    e.ms += performance.now() - t0;
    e.n++;
    totals.set(key, e);
    return r;
  };
}
const ids = benchTokens(Number(pArg), model.vocabSize);
const session = new Session(model, { contextLength: Number(pArg) + Number(dArg) + 8 });
const run = () => {
  session.reset();
  totals.clear();
  phase = 'prefill';
  const t0 = performance.now();
  let logits = session.prefill(ids);
  const t1 = performance.now();
  phase = 'decode';
  for (let i = 0; i < Number(dArg); i++) {
    let b = 0;
    for (let j = 1; j < logits.length; j++) if (logits[j] > logits[b]) b = j;
    logits = session.step(b);
  }
  return [t1 - t0, performance.now() - t1];
};
run();
const [pm, dm] = run();
console.log(`prefill ${ids.length} tokens: ${pm.toFixed(1)} ms (${((ids.length * 1000) / pm).toFixed(1)} tok/s); decode ${dArg} steps: ${dm.toFixed(1)} ms (${((Number(dArg) * 1000) / dm).toFixed(1)} tok/s); simd ${backend.simd}, ${backend.threads} threads`);
for (const p of ['prefill', 'decode']) {
  const total = p === 'prefill' ? pm : dm;
  const rows = [...totals].filter(([k]) => k.startsWith(p)).sort((a, b) => b[1].ms - a[1].ms);
  let sum = 0;
  for (const [k, v] of rows) {
    sum += v.ms;
    console.log(`${k.padEnd(48)} ${v.ms.toFixed(1).padStart(8)} ms ${((100 * v.ms) / total).toFixed(1).padStart(5)}%  ×${v.n}`);
  }
  console.log(`${p} outside backend ops`.padEnd(49) + `${(total - sum).toFixed(1).padStart(8)} ms ${((100 * (total - sum)) / total).toFixed(1).padStart(5)}%`);
}
backend.dispose();
