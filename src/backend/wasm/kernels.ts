// The compiled AssemblyScript kernels (kernels/*.ts → build/kernels.wasm, build/kernels-relaxed.wasm):
// picking a build and typing its exports; the host (platform/host.ts) loads and compiles them.
import { LutraError } from '../../util/errors.js';
import { hostEngineVersion, hostEnv, kernelsModule } from '../../platform/host.js';

/** Exports of build/kernels.wasm. Addresses are byte offsets into the shared memory. */
export interface Kernels {
  matmul(d: number, x: number, T: number, out: number, r0: number, r1: number, scratch: number): void;
  quantizeTokens(d: number, x: number, t0: number, t1: number, q: number, T: number): void;
  q8TokenBytes(cols: number): number;
  q8Layout(d: number, T: number): number;
  attention(q: number, k: number, v: number, cacheK: number, cacheV: number, capacity: number, ring: number,
    pos0: number, numHeads: number, numKvHeads: number, headDim: number, scale: number, window: number,
    out: number, u0: number, u1: number, scratch: number, split: number, partials: number, kvHalf: number, T: number, qBlock: number): void;
  attentionCombine(partials: number, pairs: number, group: number, split: number, headDim: number, out: number): void;
  rmsNorm(x: number, rows: number, dim: number, gain: number, eps: number, out: number): void;
  rope(x: number, T: number, heads: number, headDim: number, pos0: number, table: number): void;
  ropeTrig(invFreq: number, half: number, p0: number, p1: number, table: number): void;
  geluMul(gate: number, up: number, i0: number, i1: number, out: number): void;
  softcap(x: number, i0: number, i1: number, cap: number): void;
  firstNonFinite(x: number, n: number): number;
  add(acc: number, x: number, n: number): void;
  addProduct(acc: number, x: number, T: number, k: number, w: number, n: number): void;
  scale(x: number, n: number, s: number): void;
  embedRow(d: number, id: number, scale: number, out: number): void;
  decodeRow(d: number, r: number, dst: number): void;
  lutToPlanar(data: number, rows: number, cols: number, bits: number, stride: number): void;
  lutToInt8(src: number, dst: number, r0: number, rows: number, cols: number, bits: number, stride: number, tables: number, group: number): void;
  lutToNibbles(src: number, dst: number, rows: number, cols: number, bits: number, stride: number): void;
  roundF16(p: number, n: number): number;
  heapBase(): number;
}

/** Memory limits the module was compiled with (asc --initialMemory / --maximumMemory, in pages). */
export const INITIAL_PAGES = 17;
export const MAX_PAGES = 65536;

/**
 * Which kernels build runs. 'relaxed' (build/kernels-relaxed.wasm) adds relaxed-SIMD int4
 * kernels (kernels/q4-relaxed.ts); 'baseline' (build/kernels.wasm) needs SIMD128 only; 'auto'
 * picks relaxed where the engine has it. Both give the same integer sums (see q4-relaxed.ts).
 * Each comes in a shared-memory build (threads) and an unshared one ("-st": one thread, for a
 * page without cross-origin isolation, where SharedArrayBuffer does not exist).
 */
export type SimdLevel = 'auto' | 'relaxed' | 'baseline';
export const SIMD_LEVELS: readonly SimdLevel[] = ['auto', 'relaxed', 'baseline'];

function kernelsFile(level: 'relaxed' | 'baseline', shared: boolean): string {
  return `kernels${level === 'relaxed' ? '-relaxed' : ''}${shared ? '' : '-st'}.wasm`;
}

/** The level `simd` resolves to on this engine (the LUTRA_SIMD environment variable overrides 'auto'). */
export function resolveSimd(simd: SimdLevel = 'auto', shared = true): 'relaxed' | 'baseline' {
  if (!SIMD_LEVELS.includes(simd)) throw new LutraError(`unknown SIMD level "${simd}": expected ${SIMD_LEVELS.join(', ')}`);
  if (simd === 'auto') {
    const env = hostEnv('LUTRA_SIMD');
    if (env !== undefined && env !== '' && env !== 'auto') return resolveSimd(env as SimdLevel, shared);
  }
  if (simd === 'baseline') return 'baseline';
  const ok = kernelsModule(kernelsFile('relaxed', shared)) !== null;
  if (!ok && simd === 'relaxed') throw new LutraError(`this JavaScript engine (${hostEngineVersion()}) has no WebAssembly relaxed SIMD: use the baseline kernels`);
  return ok ? 'relaxed' : 'baseline';
}

export function kernelModule(level: 'relaxed' | 'baseline', shared = true): WebAssembly.Module {
  const file = kernelsFile(level, shared);
  const m = kernelsModule(file);
  if (m === null) throw new LutraError(`${file}: this JavaScript engine (${hostEngineVersion()}) cannot compile it`);
  return m;
}

export function instantiate(module: WebAssembly.Module, memory: WebAssembly.Memory): Kernels {
  return new WebAssembly.Instance(module, { env: { memory } }).exports as unknown as Kernels;
}
