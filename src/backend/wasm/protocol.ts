// The pool's control block: a few Int32 slots in the shared memory that the calling thread and
// the workers synchronise on with Atomics (no postMessage per op), and the jobs they run.
import type { Kernels } from './kernels.js';

/** Slots of the control Int32Array. */
export const GEN = 0; // bumped by the caller for every job; workers wait on it
export const DONE = 1; // workers that finished the current job; the caller waits on it
export const READY = 2; // workers that have instantiated the module
export const OP = 3;
export const ERROR = 4; // 1 when a worker's share threw; the message is logged by the worker
export const NEXT = 5; // matmuls, attention: first row / unit not yet claimed (participants take chunks)
export const MEM = 6; // which memory's kernels instance runs the job (0: the main one; weights past it live in others)
export const ARGS = 8; // job arguments (i32, or f32 bits through the Float32Array view)
export const JOBS = 32; // OP_MATMULS: its job table, JOB_INTS slots per matmul
export const JOB_INTS = 6;
/** The most matmuls one OP_MATMULS job runs (the host splits longer lists). */
export const MAX_JOBS = 32;
export const CONTROL_INTS = JOBS + JOB_INTS * MAX_JOBS;

export const OP_MATMULS = 1;
export const OP_ATTENTION = 2;
export const OP_GELU = 3;
export const OP_QUANTIZE = 4;
export const OP_RMSNORM = 5;
export const OP_ROPE = 6;
export const OP_SOFTCAP = 7;
export const OP_EXIT = 99;

/** Argument slots that follow ARGS, per job. */
export const A_SCRATCH = ARGS; // thread scratch base
export const A_SCRATCH_STRIDE = ARGS + 1; // bytes per thread
export const A_THREADS = ARGS + 2; // participants (caller + workers)
export const A_JOB = ARGS + 3; // first job-specific argument

/** [start, end) of participant i's share of n items, boundaries aligned to `align`. */
export function share(n: number, parts: number, i: number, align: number): [number, number] {
  const cut = (j: number) => Math.min(n, Math.round((n * j) / parts / align) * align);
  return [cut(i), i === parts - 1 ? n : cut(i + 1)];
}

/**
 * Guided self-scheduling: a claim starting at r0 takes 1/parts of the rows still unclaimed,
 * rounded up to whole chunks, so the first claims are large and the last ones one chunk. Each
 * claim starts new memory streams: 16 fixed chunks cost a 2-thread decode GEMV ~10 µs more than
 * this (EXPERIMENTS W49), and a participant that starts late still finds rows left to share.
 */
function claimEnd(r0: number, rows: number, chunk: number, parts: number): number {
  return Math.min(rows, r0 + Math.ceil((rows - r0) / parts / chunk) * chunk);
}

/** Claim the next rows for this participant: their start, ≥ rows when none are left. */
function claim(ctl: Int32Array, rows: number, chunk: number, parts: number): number {
  for (;;) {
    const r0 = Atomics.load(ctl, NEXT);
    if (r0 >= rows || Atomics.compareExchange(ctl, NEXT, r0, claimEnd(r0, rows, chunk, parts)) === r0) return r0;
  }
}

/** Run participant i's share of the job described in the control block, on the kernels of memory ctl[MEM]. */
export function runShare(instances: readonly Kernels[], ctl: Int32Array, ctlF: Float32Array, i: number): void {
  const k = instances[ctl[MEM]];
  const parts = ctl[A_THREADS];
  const scratch = ctl[A_SCRATCH] + i * ctl[A_SCRATCH_STRIDE];
  const a = A_JOB;
  switch (ctl[OP]) {
    case OP_MATMULS: {
      // count, rows, chunk; per matmul at JOBS: d, x, T, out, rows, first row. The matmuls' rows
      // are numbered one after another (each first row a multiple of 4, so a claim keeps the GEMM's
      // 4-row tiles whole) and claimed as one job's: one dispatch for several small matmuls.
      const n = ctl[a], rows = ctl[a + 1], chunk = ctl[a + 2];
      for (let r0; (r0 = claim(ctl, rows, chunk, parts)) < rows; ) {
        const r1 = claimEnd(r0, rows, chunk, parts);
        for (let j = 0, e = JOBS; j < n; j++, e += JOB_INTS) {
          const first = ctl[e + 5], lo = Math.max(r0, first), hi = Math.min(r1, first + ctl[e + 4]);
          if (lo < hi) k.matmul(ctl[e], ctl[e + 1], ctl[e + 2], ctl[e + 3], lo - first, hi - first, scratch);
        }
      }
      break;
    }
    case OP_ATTENTION: {
      // q, k, v, cacheK, cacheV, capacity, ring, pos0, numHeads, numKvHeads, headDim, scale, window, out, units, split, partials, kvHalf, T, qBlock
      // Units claimed a few at a time: causal units late in the batch see more keys than early ones.
      const units = ctl[a + 14], chunk = Math.max(1, Math.floor(units / (8 * parts)));
      for (;;) {
        const u0 = Atomics.add(ctl, NEXT, chunk);
        if (u0 >= units) break;
        k.attention(ctl[a], ctl[a + 1], ctl[a + 2], ctl[a + 3], ctl[a + 4], ctl[a + 5], ctl[a + 6], ctl[a + 7],
          ctl[a + 8], ctl[a + 9], ctl[a + 10], ctlF[a + 11], ctl[a + 12], ctl[a + 13], u0, Math.min(units, u0 + chunk), scratch, ctl[a + 15], ctl[a + 16], ctl[a + 17], ctl[a + 18], ctl[a + 19]);
      }
      break;
    }
    case OP_GELU: {
      // gate, up, out, n
      const [i0, i1] = share(ctl[a + 3], parts, i, 4);
      if (i1 > i0) k.geluMul(ctl[a], ctl[a + 1], i0, i1, ctl[a + 2]);
      break;
    }
    case OP_QUANTIZE: {
      // d, x, T, q: the tokens of a GEMM's input quantized once, split over the participants.
      const [t0, t1] = share(ctl[a + 2], parts, i, 1);
      if (t1 > t0) k.quantizeTokens(ctl[a], ctl[a + 1], t0, t1, ctl[a + 3], ctl[a + 2]);
      break;
    }
    case OP_RMSNORM: {
      // x, rows, dim, gain, eps (f64 in two slots), out: rows split over the participants.
      const [r0, r1] = share(ctl[a + 1], parts, i, 1);
      const off = r0 * ctl[a + 2] * 4;
      if (r1 > r0) k.rmsNorm(ctl[a] + off, r1 - r0, ctl[a + 2], ctl[a + 3], getF64(ctl, a + 4), ctl[a + 6] + off);
      break;
    }
    case OP_ROPE: {
      // x, T, heads, headDim, pos0, trig table: tokens split over the participants.
      const [t0, t1] = share(ctl[a + 1], parts, i, 1);
      if (t1 > t0) k.rope(ctl[a] + t0 * ctl[a + 2] * ctl[a + 3] * 4, t1 - t0, ctl[a + 2], ctl[a + 3], ctl[a + 4] + t0, ctl[a + 5]);
      break;
    }
    case OP_SOFTCAP: {
      // x, n, cap (f64 in two slots)
      const [i0, i1] = share(ctl[a + 1], parts, i, 4);
      if (i1 > i0) k.softcap(ctl[a], i0, i1, getF64(ctl, a + 2));
      break;
    }
    default:
      throw new Error(`wasm pool: unknown op ${ctl[OP]}`);
  }
}

const f64 = new Float64Array(1);
const f64Words = new Int32Array(f64.buffer);

/** An f64 job argument in slots i, i + 1 (the control block's views are i32 and f32). */
export function setF64(ctl: Int32Array, i: number, x: number): void {
  f64[0] = x;
  ctl[i] = f64Words[0];
  ctl[i + 1] = f64Words[1];
}

export function getF64(ctl: Int32Array, i: number): number {
  f64Words[0] = ctl[i];
  f64Words[1] = ctl[i + 1];
  return f64[0];
}
