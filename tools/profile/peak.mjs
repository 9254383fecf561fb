#!/usr/bin/env node
// The integer dot products' peak rate on one thread of this machine (build/peak-relaxed.wasm: eight
// independent dot + add chains on registers, no memory traffic), the ceiling a q8 GEMM's GMAC/s
// per thread is stated against: i16x8.relaxed_dot_i8x16_i7x16_s (int4 weights) and
// i32x4.dot_i16x8_s (int8 weights widened to i16). Pin it with taskset to compare CPUs.
//   node tools/profile/peak.mjs [rounds=5]
import { kernelsModule } from '../../dist/src/platform/host.js';

const rounds = Number(process.argv[2] ?? 5);
const mod = kernelsModule('peak-relaxed.wasm');
if (!mod) {
  console.error('this engine has no relaxed SIMD');
  process.exit(1);
}
const k = new WebAssembly.Instance(mod, { env: { memory: new WebAssembly.Memory({ initial: 1, maximum: 65536 }) } }).exports;
const iters = 2e7;
for (const [name, macs, what] of [['dot7', 128, 'i16x8.relaxed_dot_i8x16_i7x16_s + i16x8.add'], ['dot16', 64, 'i32x4.dot_i16x8_s + i32x4.add']]) {
  k[name](1e6, 3);
  let best = Infinity;
  for (let r = 0; r < rounds; r++) {
    const t0 = performance.now();
    k[name](iters, 3);
    best = Math.min(best, performance.now() - t0);
  }
  console.log(`${what.padEnd(45)} ${((iters * macs) / best / 1e6).toFixed(1)} GMAC/s (${((iters * 8) / best / 1e6).toFixed(2)} G instructions/s)`);
}
