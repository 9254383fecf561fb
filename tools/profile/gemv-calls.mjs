#!/usr/bin/env node
// Per-call time of a decode GEMV out of cache: ~200 MB of distinct random matrices of one shape,
// called in turn (as a model's layers are), so every call streams its weights from memory and pays
// the pool's dispatch and chunking. The fixed cost per call is the intercept over row counts.
//   node tools/profile/gemv-calls.mjs [threads=2] [format=int4:32] [cols=1536] [rows=1024,2048,6144,12288]
import { WasmBackend } from '../../dist/src/backend/wasm/index.js';
import { auxLayout, parseFormat, rowBytes } from '../../dist/src/model/formats.js';

const [thArg = '2', fmtArg = 'int4:32', colArg = '1536', rowArg = '1024,2048,6144,12288'] = process.argv.slice(2);
const B = new WasmBackend({ threads: Number(thArg) });
const f = parseFormat(fmtArg, 'format');
const cols = Number(colArg);

function weight(rows, seed) {
  const data = new Uint8Array(rows * rowBytes(f, cols));
  for (let j = 0; j < data.length; j++) data[j] = ((j + seed) * 2654435761) >>> 24;
  const w = { name: `w${seed}`, shape: [rows, cols], format: f, data, source: 'bench' };
  const aux = auxLayout(f, rows, cols);
  if (aux) w[aux.name] = new Float32Array(aux.count).fill(0.01);
  return w;
}

for (const rows of rowArg.split(',').map(Number)) {
  const bytes = rows * rowBytes(f, cols);
  const n = Math.max(2, Math.ceil(200e6 / bytes));
  const mats = Array.from({ length: n }, (_, i) => B.prepare(weight(rows, i)));
  B.resetScratch();
  const x = B.scratch(cols);
  for (let i = 0; i < cols; i++) x[i] = Math.sin(i);
  const out = B.scratch(rows);
  const times = [];
  for (let r = 0; r < 4; r++)
    for (const m of mats) {
      const t0 = performance.now();
      B.matmul(x, 1, m, out);
      times.push(performance.now() - t0);
    }
  times.sort((a, b) => a - b);
  const med = times[times.length >> 1];
  console.log(`${fmtArg} ${rows}×${cols}, ${n} matrices, ${thArg} threads: median ${(med * 1000).toFixed(1)} µs (${(bytes / med / 1e6).toFixed(1)} GB/s of codes), min ${(times[0] * 1000).toFixed(1)} µs`);
}
B.dispose();
