// The worker pool: threads − 1 workers plus the calling thread, one kernels instance each over
// the shared memory. A job is written into the control block, GEN is bumped and notified, every
// participant runs its share (the caller takes share 0), and the caller waits for DONE to reach
// the worker count. Waiting spins (2 000 polls by default) before Atomics.wait: waking a sleeping
// thread costs tens of µs on bare metal and far more on a VM, and a decode step issues 150–400 jobs.
// A job runs on the kernels instance of one memory (ctl[MEM]); when the backend opens another
// memory for weights, the workers are replaced by ones that also hold an instance over it.
import { A_SCRATCH, A_SCRATCH_STRIDE, A_THREADS, CONTROL_INTS, DONE, ERROR, GEN, MEM, OP, OP_EXIT, READY, runShare } from './protocol.js';
import type { Kernels } from './kernels.js';
import { LutraError } from '../../util/errors.js';
import { spawnPoolWorker, type PoolWorker } from '../../platform/host.js';

export interface PoolOptions {
  threads: number;
  /** Polls of the control word before sleeping in Atomics.wait. */
  spin: number;
}

export class Pool {
  readonly ctl: Int32Array;
  readonly ctlF: Float32Array;
  private readonly workers: PoolWorker[] = [];
  private ready = false;
  /** This thread's kernels instance per memory, the main one first. */
  private readonly instances: Kernels[];
  private readonly memories: WebAssembly.Memory[];
  /** A memory was added since the workers started: they are replaced before the next job. */
  private stale = false;

  constructor(
    kernels: Kernels,
    private readonly module: WebAssembly.Module,
    memory: WebAssembly.Memory,
    private readonly control: number,
    readonly opts: PoolOptions,
  ) {
    this.instances = [kernels];
    this.memories = [memory];
    this.ctl = new Int32Array(memory.buffer, control, CONTROL_INTS);
    this.ctlF = new Float32Array(memory.buffer, control, CONTROL_INTS);
    this.spawn();
  }

  private spawn(): void {
    Atomics.store(this.ctl, READY, 0);
    this.ready = false;
    for (let i = 1; i < this.opts.threads; i++) {
      this.workers.push(spawnPoolWorker({ module: this.module, memories: this.memories, control: this.control, index: i, workers: this.opts.threads - 1, spin: this.opts.spin }));
    }
  }

  get threads(): number {
    return this.opts.threads;
  }

  /**
   * Jobs may now run on `kernels` over `memory` (its index is returned: the job's ctl[MEM]).
   * Running workers have no instance over it, so they are replaced before the next job.
   */
  addMemory(kernels: Kernels, memory: WebAssembly.Memory): number {
    this.instances.push(kernels);
    this.memories.push(memory);
    if (this.workers.length > 0) this.stale = true;
    return this.instances.length - 1;
  }

  /** Stop the workers (each counts itself out in DONE before it stops reading the control block), then start new ones over every memory. */
  private respawn(): void {
    // Every old worker must be in its loop to see OP_EXIT: one still starting could otherwise run a share of a later job.
    if (!this.ready) this.waitReady();
    this.stopWorkers();
    this.stale = false;
    this.spawn();
  }

  private stopWorkers(): void {
    if (this.workers.length === 0) return;
    const { ctl } = this;
    ctl[OP] = OP_EXIT;
    Atomics.store(ctl, DONE, 0);
    Atomics.add(ctl, GEN, 1);
    Atomics.notify(ctl, GEN);
    if (this.ready) this.waitDone();
    for (const w of this.workers) w.terminate();
    this.workers.length = 0;
  }

  /**
   * Wait, without blocking this thread, until every worker has instantiated its module. A
   * browser starts a nested worker only when its parent's event loop runs, so the engine worker
   * must await this before its first job instead of blocking in waitReady().
   */
  async whenReady(): Promise<void> {
    if (this.stale) this.respawn();
    const n = this.workers.length;
    const t0 = Date.now();
    while (Atomics.load(this.ctl, READY) < n) {
      if (Date.now() - t0 > 30_000) throw new LutraError(`wasm backend: only ${Atomics.load(this.ctl, READY)} of ${n} worker threads started within 30 s`);
      await new Promise((r) => setTimeout(r, 2));
    }
    this.ready = true;
  }

  /** Block until every worker has instantiated its module (once, before the first job). */
  private waitReady(): void {
    const n = this.workers.length;
    const t0 = Date.now();
    for (;;) {
      const r = Atomics.load(this.ctl, READY);
      if (r >= n) break;
      if (Date.now() - t0 > 30_000) throw new LutraError(`wasm backend: only ${r} of ${n} worker threads started within 30 s`);
      Atomics.wait(this.ctl, READY, r, 100);
    }
    this.ready = true;
  }

  /**
   * Run the job whose arguments are already in ctl[A_JOB...], on `parts` participants (1 runs it
   * on this thread alone without waking anyone).
   */
  run(op: number, scratch: number, scratchStride: number, parts = this.threads, mem = 0): void {
    const { ctl } = this;
    if (parts !== 1 && this.stale) this.respawn();
    ctl[OP] = op;
    ctl[MEM] = mem;
    ctl[A_SCRATCH] = scratch;
    ctl[A_SCRATCH_STRIDE] = scratchStride;
    if (parts === 1 || this.workers.length === 0) {
      ctl[A_THREADS] = 1;
      runShare(this.instances, ctl, this.ctlF, 0);
      return;
    }
    if (!this.ready) this.waitReady();
    ctl[A_THREADS] = this.threads;
    Atomics.store(ctl, DONE, 0);
    Atomics.add(ctl, GEN, 1);
    Atomics.notify(ctl, GEN);
    try {
      runShare(this.instances, ctl, this.ctlF, 0);
    } finally {
      this.waitDone(); // never start the next job while workers still run this one
    }
    if (Atomics.load(ctl, ERROR) !== 0) {
      Atomics.store(ctl, ERROR, 0);
      throw new Error('wasm backend: a worker thread failed (its error is printed above)');
    }
  }

  private waitDone(): void {
    const { ctl } = this;
    const n = this.workers.length;
    for (let s = 0; s < this.opts.spin; s++) if (Atomics.load(ctl, DONE) === n) return;
    for (;;) {
      const d = Atomics.load(ctl, DONE);
      if (d === n) return;
      Atomics.wait(ctl, DONE, d, 1000);
    }
  }

  dispose(): void {
    this.stopWorkers();
  }
}
