// A pool worker's life: instantiate the kernels over each shared memory (the main one first, then
// those holding weights past it), then loop: wait for GEN to move, run this thread's share of the
// job, count itself into DONE. On OP_EXIT it counts itself into DONE too and stops touching the
// control block, so the pool can replace its workers mid-life. The host starts it (worker.ts
// under Node's worker_threads, pool-worker.ts in a browser's Web Worker).
import { CONTROL_INTS, DONE, ERROR, GEN, OP, OP_EXIT, READY, runShare } from './protocol.js';
import { instantiate } from './kernels.js';

export interface PoolWorkerData {
  module: WebAssembly.Module;
  /** The main memory (holding the control block) first. */
  memories: WebAssembly.Memory[];
  control: number;
  index: number;
  workers: number;
  spin: number;
}

export function runPoolWorker({ module, memories, control, index, workers, spin }: PoolWorkerData): void {
  const kernels = memories.map((m) => instantiate(module, m));
  const ctl = new Int32Array(memories[0].buffer, control, CONTROL_INTS);
  const ctlF = new Float32Array(memories[0].buffer, control, CONTROL_INTS);

  // No job is posted before every worker is READY, so none is missed between these two lines.
  let seen = Atomics.load(ctl, GEN);
  Atomics.add(ctl, READY, 1);
  Atomics.notify(ctl, READY);

  for (;;) {
    let g = Atomics.load(ctl, GEN);
    for (let s = 0; g === seen && s < spin; s++) g = Atomics.load(ctl, GEN);
    while (g === seen) {
      Atomics.wait(ctl, GEN, seen);
      g = Atomics.load(ctl, GEN);
    }
    seen = g;
    if (ctl[OP] === OP_EXIT) {
      if (Atomics.add(ctl, DONE, 1) + 1 === workers) Atomics.notify(ctl, DONE);
      break;
    }
    try {
      runShare(kernels, ctl, ctlF, index);
    } catch (e) {
      console.error(`lutra wasm worker ${index}:`, e);
      Atomics.store(ctl, ERROR, 1);
    }
    if (Atomics.add(ctl, DONE, 1) + 1 === workers) Atomics.notify(ctl, DONE);
  }
}
