// What the engine needs from its host, Node's version: core count, environment settings, the
// compiled kernels and the pool's worker threads. The browser build replaces this module with
// host-browser.ts (tools/build-browser.mjs maps it), so nothing below the engine imports `node:`
// modules for these needs.
import { availableParallelism } from 'node:os';
import { readFileSync, existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import v8 from 'node:v8';
import { LutraError } from '../util/errors.js';
import type { PoolWorkerData } from '../backend/wasm/worker-loop.js';

/** dist/src/platform/ → repository root → build/ */
const BUILD_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'build');

export function hostCores(): number {
  return availableParallelism();
}

export function hostEnv(name: string): string | undefined {
  return process.env[name];
}

/** Whether WebAssembly memories may be shared between threads (always in Node). */
export function hostSharedMemory(): boolean {
  return true;
}

/** Whether the wasm backend may open further WebAssembly memories for weights past 4 GiB (Node: yes). */
export function hostExtraMemories(): boolean {
  return true;
}

export function hostEngineVersion(): string {
  return `V8 ${process.versions.v8}`;
}

const modules = new Map<string, WebAssembly.Module | null>();

/**
 * The compiled kernels file `file` (under build/), or null when this engine cannot validate it
 * (a relaxed-SIMD build on an engine without relaxed SIMD). Relaxed SIMD is on by default from
 * Node 22 (V8 11.4); Node 20 has it behind --experimental-wasm-relaxed-simd, which V8 reads when
 * a module is validated, so setting it here (before any relaxed module is compiled) is enough.
 */
export function kernelsModule(file: string): WebAssembly.Module | null {
  if (modules.has(file)) return modules.get(file)!;
  const path = resolve(BUILD_DIR, file);
  if (!existsSync(path)) throw new LutraError(`${path} is missing: run \`npm run build:wasm\``);
  const bytes = readFileSync(path);
  let ok = WebAssembly.validate(bytes);
  if (!ok && file.includes('relaxed')) {
    v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
    ok = WebAssembly.validate(bytes);
  }
  const m = ok ? new WebAssembly.Module(bytes) : null;
  modules.set(file, m);
  return m;
}

export interface PoolWorker {
  terminate(): void;
}

/** Start one pool worker thread (worker.js runs the loop in worker-loop.ts). */
export function spawnPoolWorker(data: PoolWorkerData): PoolWorker {
  const w = new Worker(new URL('../backend/wasm/worker.js', import.meta.url), { workerData: data });
  w.unref(); // a forgotten dispose() must not keep the process alive
  return { terminate: () => void w.terminate() };
}
