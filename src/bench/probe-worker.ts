// One thread of the read-bandwidth probe: fills its slice once, then sums it on every 'run'
// message, starting together with the other threads (an Atomics barrier) and reporting wall-clock
// start and end on the shared time axis (performance.timeOrigin + now()).
import { parentPort, workerData } from 'node:worker_threads';

interface Probe {
  fill(ptr: number, bytes: number, value: number): void;
  sum(ptr: number, bytes: number): number;
}

const { module, memory, offset, bytes, barrier } = workerData as {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  offset: number;
  bytes: number;
  barrier: Int32Array;
};
const probe = new WebAssembly.Instance(module, { env: { memory } }).exports as unknown as Probe;
probe.fill(offset, bytes, 1);
parentPort!.postMessage({ ready: true });

parentPort!.on('message', (msg: { run?: number; threads: number } | 'exit') => {
  if (msg === 'exit') return process.exit(0);
  // Barrier: count in, spin until every thread of this round has arrived.
  Atomics.add(barrier, 0, 1);
  while (Atomics.load(barrier, 0) < msg.threads * msg.run!) {
    /* spin: a sleep would skew the start */
  }
  const t0 = performance.timeOrigin + performance.now();
  const s = probe.sum(offset, bytes);
  const t1 = performance.timeOrigin + performance.now();
  parentPort!.postMessage({ t0, t1, sum: s });
});
