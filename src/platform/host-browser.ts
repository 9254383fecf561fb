// What the engine needs from its host, the browser's version (see host.ts): the engine runs in a
// dedicated Web Worker; pool workers are nested Web Workers started from pool-worker.js beside
// the bundle; kernels are fetched and compiled once by preloadKernels() before a backend starts,
// because compiling from a URL is asynchronous and the backend's constructor is not.
import { LutraError } from '../util/errors.js';
import type { PoolWorkerData } from '../backend/wasm/worker-loop.js';

export function hostCores(): number {
  return typeof navigator !== 'undefined' && navigator.hardwareConcurrency > 0 ? navigator.hardwareConcurrency : 1;
}

export function hostEnv(_name: string): string | undefined {
  return undefined;
}

/** Shared WebAssembly memories need SharedArrayBuffer, which a page has only when cross-origin isolated. */
export function hostSharedMemory(): boolean {
  return typeof SharedArrayBuffer === 'function' && (globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated === true;
}

/** Whether the wasm backend may open further WebAssembly memories for weights past 4 GiB: not in a page (its pool workers could not be replaced mid-load, and pages rarely get that much memory). */
export function hostExtraMemories(): boolean {
  return false;
}

export function hostEngineVersion(): string {
  return typeof navigator !== 'undefined' ? navigator.userAgent : 'this browser';
}

const modules = new Map<string, WebAssembly.Module | null>();
let base: URL | null = null;

/** Fetch and compile the kernels builds this page can use (shared ones only when cross-origin isolated). */
export async function preloadKernels(dir: URL): Promise<void> {
  base = dir;
  const files = hostSharedMemory() ? ['kernels.wasm', 'kernels-relaxed.wasm'] : ['kernels-st.wasm', 'kernels-relaxed-st.wasm'];
  await Promise.all(
    files.map(async (file) => {
      if (modules.has(file)) return;
      const url = new URL(file, dir);
      const res = await fetch(url);
      if (!res.ok) throw new LutraError(`${url}: HTTP ${res.status} fetching the wasm kernels`);
      const bytes = await res.arrayBuffer();
      modules.set(file, WebAssembly.validate(bytes) ? await WebAssembly.compile(bytes) : null);
    }),
  );
}

export function kernelsModule(file: string): WebAssembly.Module | null {
  const m = modules.get(file);
  if (m === undefined) throw new LutraError(`${file}: the wasm kernels were not preloaded (call preloadKernels() before starting a backend)`);
  return m;
}

export interface PoolWorker {
  terminate(): void;
}

export function spawnPoolWorker(data: PoolWorkerData): PoolWorker {
  if (base === null) throw new LutraError('pool worker: preloadKernels() was not called');
  const w = new Worker(new URL('pool-worker.js', base), { type: 'module', name: `lutra pool ${data.index}` });
  w.postMessage(data);
  return { terminate: () => w.terminate() };
}
