// Micro-benchmark: one GEMV on the LM-head shape (262144 × 640) per format and thread count;
// prints the median GB/s of weight bytes streamed. Not part of the CLI:
//   node dist/src/backend/wasm/bench-gemv.js [formats=bf16,f32,int8:32,int4:32] [threads=1,2] [reps=30] [rows cols T]
// (a small matrix measures the kernel out of cache; T > 1 times the prefill GEMM, reported in GMAC/s)
import { WasmBackend } from './index.js';
import type { WasmMatrix } from './matrix.js';
import type { WeightFormat, WeightTensor } from '../../model/weight.js';
import { auxLayout, parseFormat, rowBytes } from '../../model/formats.js';

const [fmtArg = 'bf16,f32,int8:32,int4:32', thrArg = '1,2', repArg = '30', rowArg = '262144', colArg = '640', tArg = '1'] = process.argv.slice(2);
const rows = Number(rowArg), cols = Number(colArg), T = Number(tArg);

function weight(f: WeightFormat): WeightTensor {
  const data = new Uint8Array(rows * rowBytes(f, cols));
  for (let i = 0; i < data.length; i += 4096) data[i] = i & 0x3f; // touch the pages; values do not matter
  const w: WeightTensor = { name: 'lm_head', shape: [rows, cols], format: f, data, source: 'bench' };
  const aux = auxLayout(f, rows, cols);
  if (aux) w[aux.name] = new Float32Array(aux.count).fill(aux.name === 'scales' ? 0.01 : 0.5);
  return w;
}

for (const threads of thrArg.split(',').map(Number)) {
  const B = new WasmBackend({ threads });
  for (const name of fmtArg.split(',')) {
    const m = B.prepare(weight(parseFormat(name, 'formats'))) as WasmMatrix;
    B.resetScratch();
    const x = B.scratch(T * cols);
    for (let i = 0; i < x.length; i++) x[i] = Math.sin(i);
    const out = B.scratch(T * rows);
    const times: number[] = [];
    for (let i = 0; i < Number(repArg) + 3; i++) {
      const t0 = performance.now();
      B.matmul(x, T, m, out);
      if (i >= 3) times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    const med = times[times.length >> 1];
    const rate = T === 1 ? `${(m.bytes / med / 1e6).toFixed(1)} GB/s` : `${((T * rows * cols) / med / 1e6).toFixed(1)} GMAC/s`;
    console.log(`${name.padEnd(8)} threads ${threads}: median ${med.toFixed(3)} ms, ${rate} (min ${times[0].toFixed(3)} ms)`);
  }
  B.dispose();
}
