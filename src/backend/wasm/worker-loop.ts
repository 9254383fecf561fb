// A pool worker's life: instantiate the kernels over the shared memory, then loop: wait for GEN
// to move, run this thread's share of the job, count itself into DONE. The host starts it
// (worker.ts under Node's worker_threads, pool-worker.ts in a browser's Web Worker).
import { CONTROL_INTS, DONE, ERROR, GEN, OP, OP_EXIT, READY, runShare } from './protocol.js';
import { instantiate } from './kernels.js';

export interface PoolWorkerData {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  control: number;
  index: number;
  workers: number;
  spin: number;
}

export function runPoolWorker({ module, memory, control, index, workers, spin }: PoolWorkerData): void {
  const kernels = instantiate(module, memory);
  const ctl = new Int32Array(memory.buffer, control, CONTROL_INTS);
  const ctlF = new Float32Array(memory.buffer, control, CONTROL_INTS);

  Atomics.add(ctl, READY, 1);
  Atomics.notify(ctl, READY);

  let seen = 0;
  for (;;) {
    let g = Atomics.load(ctl, GEN);
    for (let s = 0; g === seen && s < spin; s++) g = Atomics.load(ctl, GEN);
    while (g === seen) {
      Atomics.wait(ctl, GEN, seen);
      g = Atomics.load(ctl, GEN);
    }
    seen = g;
    if (ctl[OP] === OP_EXIT) break;
    try {
      runShare(kernels, ctl, ctlF, index);
    } catch (e) {
      console.error(`lutra wasm worker ${index}:`, e);
      Atomics.store(ctl, ERROR, 1);
    }
    if (Atomics.add(ctl, DONE, 1) + 1 === workers) Atomics.notify(ctl, DONE);
  }
}
