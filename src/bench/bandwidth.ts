// Machine read bandwidth, measured by build/probe.wasm (kernels/probe.ts) on worker threads over a
// buffer far larger than the caches. Runs in a child process so its buffer never counts in the
// bench's peak RSS and is returned to the system at once.
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { LutraError } from '../util/errors.js';

export interface BandwidthOptions {
  /** Thread counts to try; the best is reported (default [1, 2]). */
  threads?: number[];
  /** Total buffer, split over the threads (default 1024 MiB). */
  mib?: number;
  /** Timed passes per thread count; the fastest counts (default 3). */
  repeat?: number;
}

export interface Bandwidth {
  /** Best read bandwidth, GB/s (1e9 bytes). */
  gbs: number;
  /** Thread count that gave it. */
  threads: number;
  /** Best GB/s per thread count tried. */
  byThreads: Record<string, number>;
  mib: number;
}

const HERE = dirname(fileURLToPath(import.meta.url));
/** dist/src/bench/ → repository root → build/probe.wasm */
const WASM_PATH = resolve(HERE, '..', '..', '..', 'build', 'probe.wasm');
const PAGE = 65536;

async function measureThreads(module: WebAssembly.Module, memory: WebAssembly.Memory, threads: number, bytes: number, repeat: number): Promise<number> {
  // Per-thread slices, multiples of 64 bytes (the kernel's stride), after a first page left alone.
  const slice = Math.floor(bytes / threads / 64) * 64;
  const barrier = new Int32Array(new SharedArrayBuffer(4));
  const workers = Array.from({ length: threads }, (_, i) =>
    new Worker(resolve(HERE, 'probe-worker.js'), { workerData: { module, memory, offset: PAGE + i * slice, bytes: slice, barrier } }),
  );
  const next = (w: Worker) =>
    new Promise<{ t0: number; t1: number }>((res, rej) => {
      w.once('message', res);
      w.once('error', rej);
    });
  try {
    await Promise.all(workers.map(next)); // filled
    let best = 0;
    for (let run = 1; run <= repeat; run++) {
      const done = Promise.all(workers.map(next));
      for (const w of workers) w.postMessage({ run, threads });
      const times = await done;
      const seconds = (Math.max(...times.map((t) => t.t1)) - Math.min(...times.map((t) => t.t0))) / 1000;
      best = Math.max(best, (slice * threads) / seconds / 1e9);
    }
    return best;
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

/** Measure in this process. */
export async function measureBandwidth(opts: BandwidthOptions = {}): Promise<Bandwidth> {
  const threadCounts = opts.threads ?? [1, 2];
  const mib = opts.mib ?? 1024;
  const repeat = opts.repeat ?? 3;
  if (!existsSync(WASM_PATH)) throw new LutraError(`${WASM_PATH} is missing: run \`npm run build:wasm\``);
  const module = new WebAssembly.Module(readFileSync(WASM_PATH));
  const bytes = mib * 1024 * 1024;
  const memory = new WebAssembly.Memory({ initial: Math.ceil(bytes / PAGE) + 2, maximum: 65536, shared: true });
  const byThreads: Record<string, number> = {};
  for (const t of threadCounts) byThreads[t] = await measureThreads(module, memory, t, bytes, repeat);
  const [threads, gbs] = Object.entries(byThreads).reduce((a, b) => (b[1] > a[1] ? b : a));
  return { gbs, threads: Number(threads), byThreads, mib };
}

/** Measure in a child node process (see the header comment). */
export function measureBandwidthIsolated(opts: BandwidthOptions = {}): Promise<Bandwidth> {
  return new Promise((res, rej) => {
    execFile(process.execPath, [fileURLToPath(import.meta.url), JSON.stringify(opts)], { maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err) return rej(new LutraError(`bandwidth probe failed: ${(stderr || err.message).trim().split('\n')[0]}`));
      res(JSON.parse(stdout) as Bandwidth);
    });
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  measureBandwidth(JSON.parse(process.argv[2] ?? '{}') as BandwidthOptions).then(
    (b) => process.stdout.write(JSON.stringify(b) + '\n'),
    (e: Error) => {
      process.stderr.write(`${e.message}\n`);
      process.exitCode = 1;
    },
  );
}
