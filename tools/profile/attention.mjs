#!/usr/bin/env node
// One attention call on the wasm backend, timed alone: T queries at positions P..P+T-1 over P cached
// keys (a decode step: T = 1; a prefill pass: T = 512), 4 query heads sharing 1 KV head of 256 dims
// (the gemma-3-270m / 1b layout). With --evict a 128 MB buffer is walked before every run so K and V
// come from DRAM as between a model's layers. --spread S scales the queries (wide score spreads).
//   node tools/profile/attention.mjs [--keys 16384] [--queries 1] [--kv f16|f32] [--window 0]
//        [--threads 2] [--spread 1] [--evict] [--runs 20]
import { parseArgs } from 'node:util';
import { WasmBackend } from '../../dist/src/backend/wasm/index.js';
import { f32ToF16Bits } from '../../dist/src/util/half.js';

const { values: o } = parseArgs({
  options: {
    keys: { type: 'string', default: '16384' }, queries: { type: 'string', default: '1' }, kv: { type: 'string', default: 'f16' },
    window: { type: 'string', default: '0' }, threads: { type: 'string', default: '2' }, spread: { type: 'string', default: '1' },
    evict: { type: 'boolean', default: false }, runs: { type: 'string', default: '20' },
  },
});
const P = Number(o.keys), T = Number(o.queries), W = Number(o.window), runs = Number(o.runs);
const H = 4, KV = 1, D = 256;
const b = new WasmBackend({ threads: Number(o.threads) });
await b.ready?.();
let s = 1;
const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32) - 0.5;
const fill = (a, m = 1) => {
  for (let i = 0; i < a.length; i++) a[i] = rnd() * m;
  return a;
};
const cacheArray = () => {
  if (o.kv === 'f32') return fill(b.alloc(P * KV * D));
  const a = b.alloc((P * KV * D) / 2);
  const h = new Uint16Array(a.buffer, a.byteOffset, P * KV * D);
  for (let i = 0; i < h.length; i++) h[i] = f32ToF16Bits(rnd());
  return a;
};
const cache = { k: cacheArray(), v: cacheArray(), capacity: P, ring: false, type: o.kv };
const big = new Float64Array(16 << 20);
b.resetScratch();
const q = fill(b.scratch(T * H * D), Number(o.spread)), k = fill(b.scratch(T * KV * D)), v = fill(b.scratch(T * KV * D)), out = b.scratch(T * H * D);
const run = () => b.attention({ q, k, v, cache, pos0: P, T, numHeads: H, numKvHeads: KV, headDim: D, scale: 1 / 16, window: W, qChunk: 32, out });
for (let i = 0; i < 3; i++) run();
let best = Infinity, total = 0, sink = 0;
for (let i = 0; i < runs; i++) {
  if (o.evict) for (let j = 0; j < big.length; j += 8) sink += big[j]++;
  const t0 = performance.now();
  run();
  const t = performance.now() - t0;
  best = Math.min(best, t);
  total += t;
}
console.log(`${T} quer${T === 1 ? 'y' : 'ies'} over ${P} cached keys (${o.kv}), window ${W || 'none'}, ${b.threads} threads (${b.simd} SIMD)${o.evict ? ', caches evicted' : ''}: best ${best.toFixed(3)} ms, mean ${(total / runs).toFixed(3)} ms${sink < 0 ? '' : ''}`);
b.dispose();
