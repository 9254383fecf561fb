// The compiled AssemblyScript kernels (kernels/*.ts → build/kernels.wasm): loading and typing.
import { readFileSync, existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LutraError } from '../../util/errors.js';

/** Exports of build/kernels.wasm. Addresses are byte offsets into the shared memory. */
export interface Kernels {
  matmul(d: number, x: number, T: number, out: number, r0: number, r1: number, scratch: number): void;
  attention(q: number, k: number, v: number, cacheK: number, cacheV: number, capacity: number, ring: number,
    pos0: number, numHeads: number, numKvHeads: number, headDim: number, scale: number, window: number,
    out: number, u0: number, u1: number, scratch: number): void;
  rmsNorm(x: number, rows: number, dim: number, gain: number, eps: number, out: number): void;
  rope(x: number, T: number, heads: number, headDim: number, pos0: number, invFreq: number, trig: number): void;
  geluMul(gate: number, up: number, i0: number, i1: number, out: number): void;
  add(acc: number, x: number, n: number): void;
  embedRow(d: number, id: number, scale: number, out: number): void;
  decodeRow(d: number, r: number, dst: number): void;
  roundF16(p: number, n: number): number;
  heapBase(): number;
}

/** Memory limits the module was compiled with (asc --initialMemory / --maximumMemory, in pages). */
export const INITIAL_PAGES = 17;
export const MAX_PAGES = 65536;

/** dist/src/backend/wasm/ → repository root → build/kernels.wasm */
const WASM_PATH = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..', 'build', 'kernels.wasm');

let compiled: WebAssembly.Module | null = null;

export function kernelModule(): WebAssembly.Module {
  if (compiled) return compiled;
  if (!existsSync(WASM_PATH)) throw new LutraError(`${WASM_PATH} is missing: run \`npm run build:wasm\``);
  compiled = new WebAssembly.Module(readFileSync(WASM_PATH));
  return compiled;
}

export function instantiate(module: WebAssembly.Module, memory: WebAssembly.Memory): Kernels {
  return new WebAssembly.Instance(module, { env: { memory } }).exports as unknown as Kernels;
}
