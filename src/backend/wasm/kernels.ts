// The compiled AssemblyScript kernels (kernels/*.ts → build/kernels.wasm, build/kernels-relaxed.wasm):
// picking a build, loading and typing.
import { readFileSync, existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import { LutraError } from '../../util/errors.js';

/** Exports of build/kernels.wasm. Addresses are byte offsets into the shared memory. */
export interface Kernels {
  matmul(d: number, x: number, T: number, out: number, r0: number, r1: number, scratch: number): void;
  quantizeTokens(d: number, x: number, t0: number, t1: number, q: number): void;
  q8TokenBytes(cols: number): number;
  attention(q: number, k: number, v: number, cacheK: number, cacheV: number, capacity: number, ring: number,
    pos0: number, numHeads: number, numKvHeads: number, headDim: number, scale: number, window: number,
    out: number, u0: number, u1: number, scratch: number, split: number, partials: number): void;
  attentionCombine(partials: number, pairs: number, group: number, split: number, headDim: number, out: number): void;
  rmsNorm(x: number, rows: number, dim: number, gain: number, eps: number, out: number): void;
  rope(x: number, T: number, heads: number, headDim: number, pos0: number, table: number): void;
  ropeTrig(invFreq: number, half: number, p0: number, p1: number, table: number): void;
  geluMul(gate: number, up: number, i0: number, i1: number, out: number): void;
  softcap(x: number, i0: number, i1: number, cap: number): void;
  add(acc: number, x: number, n: number): void;
  scale(x: number, n: number, s: number): void;
  embedRow(d: number, id: number, scale: number, out: number): void;
  decodeRow(d: number, r: number, dst: number): void;
  roundF16(p: number, n: number): number;
  heapBase(): number;
}

/** Memory limits the module was compiled with (asc --initialMemory / --maximumMemory, in pages). */
export const INITIAL_PAGES = 17;
export const MAX_PAGES = 65536;

/** dist/src/backend/wasm/ → repository root → build/ */
const BUILD_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..', 'build');

/**
 * Which kernels build runs. 'relaxed' (build/kernels-relaxed.wasm) adds relaxed-SIMD int4
 * kernels (kernels/q4-relaxed.ts); 'baseline' (build/kernels.wasm) needs SIMD128 only; 'auto'
 * picks relaxed where the engine has it. Both give the same integer sums (see q4-relaxed.ts).
 */
export type SimdLevel = 'auto' | 'relaxed' | 'baseline';
export const SIMD_LEVELS: readonly SimdLevel[] = ['auto', 'relaxed', 'baseline'];

const compiled = new Map<'relaxed' | 'baseline', WebAssembly.Module>();

function readBuild(file: string): Buffer<ArrayBuffer> {
  const path = resolve(BUILD_DIR, file);
  if (!existsSync(path)) throw new LutraError(`${path} is missing: run \`npm run build:wasm\``);
  return readFileSync(path);
}

/**
 * Relaxed SIMD is on by default from Node 22 (V8 11.4); Node 20 has it behind
 * --experimental-wasm-relaxed-simd, which V8 reads when a module is validated, so setting it
 * here (before any relaxed module is compiled) is enough.
 */
function engineHasRelaxedSimd(bytes: Buffer<ArrayBuffer>): boolean {
  if (WebAssembly.validate(bytes)) return true;
  v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
  return WebAssembly.validate(bytes);
}

/** The level `simd` resolves to on this engine (the LUTRA_SIMD environment variable overrides 'auto'). */
export function resolveSimd(simd: SimdLevel = 'auto'): 'relaxed' | 'baseline' {
  if (!SIMD_LEVELS.includes(simd)) throw new LutraError(`unknown SIMD level "${simd}": expected ${SIMD_LEVELS.join(', ')}`);
  if (simd === 'auto') {
    const env = process.env.LUTRA_SIMD;
    if (env !== undefined && env !== '' && env !== 'auto') return resolveSimd(env as SimdLevel);
  }
  if (simd === 'baseline') return 'baseline';
  const ok = engineHasRelaxedSimd(readBuild('kernels-relaxed.wasm'));
  if (!ok && simd === 'relaxed') throw new LutraError(`this JavaScript engine (V8 ${process.versions.v8}) has no WebAssembly relaxed SIMD: use the baseline kernels`);
  return ok ? 'relaxed' : 'baseline';
}

export function kernelModule(level: 'relaxed' | 'baseline'): WebAssembly.Module {
  let m = compiled.get(level);
  if (!m) {
    m = new WebAssembly.Module(readBuild(level === 'relaxed' ? 'kernels-relaxed.wasm' : 'kernels.wasm'));
    compiled.set(level, m);
  }
  return m;
}

export function instantiate(module: WebAssembly.Module, memory: WebAssembly.Memory): Kernels {
  return new WebAssembly.Instance(module, { env: { memory } }).exports as unknown as Kernels;
}
