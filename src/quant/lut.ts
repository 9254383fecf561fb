// Palettization lut<b>:G: each group of G consecutive output channels (rows) shares a 2^b-entry
// table found by 1-D k-means; each weight stores the b-bit index of its nearest entry.
//
// Groups are independent, so a large tensor is split across worker threads (./lut-worker.ts)
// while the caller blocks in Atomics.wait: quantizeLut stays synchronous, and since every group
// runs the same code on the same values wherever it runs, the bytes do not depend on the thread count.
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { LutraError } from '../util/errors.js';
import { rowBytes } from '../model/formats.js';
import { f16BitsToF32, f32ToF16Bits } from '../util/half.js';
import { distinctPoints, kmeansApprox, kmeansExact } from './kmeans1d.js';

/** Exact k-means when k·u·log2(u) stays under this many steps per group; binned-exact + Lloyd above it. */
export const EXACT_BUDGET = 5e4;

export interface LutQuantized {
  codes: Uint8Array;
  table: Float32Array;
  /** Groups solved exactly (vs binned-exact then Lloyd). */
  exactGroups: number;
}

export interface LutOptions {
  /**
   * Threads to use, the caller's included (default: the machine's available parallelism, at most
   * 8). 1 keeps everything on the calling thread. Small tensors always stay on it.
   */
  threads?: number;
}

/** Below this many weights a tensor is quantized on the calling thread (worker hand-off not worth it). */
const PARALLEL_MIN_WEIGHTS = 1 << 18;

export function quantizeLut(x: Float32Array, rows: number, cols: number, bits: number, group: number, tensor: string, opts: LutOptions = {}): LutQuantized {
  if (!Number.isInteger(bits) || bits < 1 || bits > 8) throw new LutraError(`tensor "${tensor}": lut bits must be 1..8, got ${bits}`);
  const G = group === 0 ? rows : group;
  if (G <= 0 || rows % G !== 0) {
    throw new LutraError(`tensor "${tensor}": ${rows} output channels are not divisible by the lut group size ${group}`);
  }
  const k = 1 << bits;
  const groups = rows / G;
  const table = new Float32Array(groups * k);
  const stride = rowBytes({ kind: 'lut', bits, group }, cols);
  const codes = new Uint8Array(rows * stride);
  const threads = Math.max(1, Math.floor(opts.threads ?? defaultThreads()));
  let exactGroups: number;
  if (threads > 1 && groups >= 2 * threads && rows * cols >= PARALLEL_MIN_WEIGHTS) {
    exactGroups = pool(threads - 1).run(x, codes, table, groups, G, cols, bits, stride);
  } else {
    exactGroups = 0;
    for (let g = 0; g < groups; g++) exactGroups += quantizeGroup(x, codes, table, g, G, cols, bits, stride);
  }
  return { codes, table, exactGroups };
}

/**
 * Quantize group g of `x` (rows g·G .. (g+1)·G − 1) into its slices of `codes` (stride bytes per
 * row) and `table` (2^bits entries per group). Returns 1 if the group was solved exactly.
 * Shared by the calling thread and the workers: the one place the result of a group is decided.
 */
export function quantizeGroup(
  x: Float32Array, codes: Uint8Array, table: Float32Array,
  g: number, G: number, cols: number, bits: number, stride: number,
): number {
  const k = 1 << bits;
  const slice = x.subarray(g * G * cols, (g + 1) * G * cols);
  const pts = distinctPoints(slice);
  const u = pts.values.length;
  let centroids: Float64Array;
  let exact = 0;
  if (u <= k) {
    // Few distinct values: reproduce them exactly (pad with the last one).
    centroids = new Float64Array(k).fill(pts.values[u - 1]);
    centroids.set(pts.values);
    exact = 1;
  } else if (k * u * Math.log2(u) <= EXACT_BUDGET) {
    centroids = kmeansExact(pts, k);
    exact = 1;
  } else {
    centroids = kmeansApprox(pts, k, Math.max(256, 8 * k));
  }
  // Tables are stored in f16, as accelerators hold them; codes are chosen against the rounded
  // entries, so a group with ≤ 2^b distinct f16-representable values is reproduced exactly.
  const t = table.subarray(g * k, (g + 1) * k);
  for (let j = 0; j < k; j++) t[j] = f16BitsToF32(f32ToF16Bits(centroids[j]));
  // Nearest entry by binary search over the sorted (f32-rounded) table.
  codes.fill(0, g * G * stride, (g + 1) * G * stride);
  for (let r = g * G; r < (g + 1) * G; r++) {
    let bit = r * stride * 8;
    for (let c = 0; c < cols; c++, bit += bits) {
      const code = nearest(t, x[r * cols + c]);
      // LSB-first bitstream; a code spans at most two bytes.
      const v = code << (bit & 7);
      codes[bit >> 3] |= v & 0xff;
      if (v > 0xff) codes[(bit >> 3) + 1] |= v >> 8;
    }
  }
  return exact;
}

function nearest(t: Float32Array, v: number): number {
  // t.length is a power of two: a fixed-step search for the number of entries below v (the first
  // entry ≥ v), written so the comparison feeds an add rather than a branch (random weights
  // mispredict half of a branchy search's steps).
  const k = t.length;
  let lo = 0;
  for (let step = k >> 1; step > 0; step >>= 1) lo += t[lo + step - 1] < v ? step : 0;
  if (lo === k) lo = k - 1;
  // lo is the first entry ≥ v (or the last); compare with the one below (ties go to the lower index).
  if (lo > 0 && v - t[lo - 1] <= t[lo] - v) return lo - 1;
  return lo;
}

function defaultThreads(): number {
  return Math.min(8, availableParallelism());
}

// ---- worker pool ------------------------------------------------------------------------------

/** Control words (Int32Array over a SharedArrayBuffer); shared with lut-worker.ts. */
export const CTRL = {
  /** Batch generation; a worker only joins the batch it was sent while this still equals it. */
  GEN: 0,
  /** Next group to claim (Atomics.add). */
  NEXT: 1,
  /** Groups finished in this batch. */
  DONE: 2,
  /** Workers currently inside a batch. */
  ACTIVE: 3,
  /** Exactly-solved groups in this batch. */
  EXACT: 4,
  /** Set by a worker whose group threw. */
  ERROR: 5,
  SIZE: 8,
} as const;

/** The message a worker gets for each batch (buffers are shared, so nothing is copied). */
export interface LutBatch {
  gen: number;
  ctrl: SharedArrayBuffer;
  x: SharedArrayBuffer;
  codes: SharedArrayBuffer;
  table: SharedArrayBuffer;
  groups: number;
  G: number;
  cols: number;
  bits: number;
  stride: number;
}

/** Claim groups from the shared counter until none are left; used by the caller and the workers. */
export function runBatch(b: LutBatch, ctrl: Int32Array, x: Float32Array, codes: Uint8Array, table: Float32Array): void {
  for (let g; (g = Atomics.add(ctrl, CTRL.NEXT, 1)) < b.groups; ) {
    // Count before DONE: the caller reads EXACT as soon as DONE reaches the batch size.
    if (quantizeGroup(x, codes, table, g, b.G, b.cols, b.bits, b.stride)) Atomics.add(ctrl, CTRL.EXACT, 1);
    Atomics.add(ctrl, CTRL.DONE, 1);
  }
  Atomics.notify(ctrl, CTRL.DONE);
}

/** Weights per batch: the tensor is copied batch by batch into a shared buffer (bounded memory). */
const BATCH_WEIGHTS = 1 << 20;
/** Workers are terminated after this long without a batch. */
const IDLE_MS = 2000;
/** No group finished for this long while the caller waits: give up on the workers. */
const STALL_MS = 60_000;

class LutPool {
  private readonly workers: Worker[] = [];
  private readonly ctrlBuf = new SharedArrayBuffer(CTRL.SIZE * 4);
  private readonly ctrl = new Int32Array(this.ctrlBuf);
  private xBuf = new SharedArrayBuffer(0);
  private codesBuf = new SharedArrayBuffer(0);
  private tableBuf = new SharedArrayBuffer(0);
  private idle: NodeJS.Timeout | undefined;

  constructor(private readonly size: number) {}

  run(x: Float32Array, codes: Uint8Array, table: Float32Array, groups: number, G: number, cols: number, bits: number, stride: number): number {
    if (this.idle) clearTimeout(this.idle);
    this.start();
    const k = 1 << bits;
    const per = Math.max(1, Math.floor(BATCH_WEIGHTS / (G * cols)));
    this.ensure(Math.min(per, groups), G, cols, k, stride);
    const sx = new Float32Array(this.xBuf);
    const sc = new Uint8Array(this.codesBuf);
    const st = new Float32Array(this.tableBuf);
    const ctrl = this.ctrl;
    let exact = 0;
    try {
      for (let g0 = 0; g0 < groups; g0 += per) {
        const n = Math.min(per, groups - g0);
        // New generation first, then wait for stragglers of the previous batch to leave, so no
        // worker can claim a group of this batch against the previous batch's buffers.
        const gen = (Atomics.load(ctrl, CTRL.GEN) + 1) | 0;
        Atomics.store(ctrl, CTRL.GEN, gen);
        const t0 = Date.now();
        for (let a; (a = Atomics.load(ctrl, CTRL.ACTIVE)) !== 0; ) {
          if (Date.now() - t0 > STALL_MS) throw new Error('lut worker stalled');
          Atomics.wait(ctrl, CTRL.ACTIVE, a, 100);
        }
        sx.set(x.subarray(g0 * G * cols, (g0 + n) * G * cols));
        Atomics.store(ctrl, CTRL.DONE, 0);
        Atomics.store(ctrl, CTRL.EXACT, 0);
        Atomics.store(ctrl, CTRL.NEXT, 0);
        const batch: LutBatch = { gen, ctrl: this.ctrlBuf, x: this.xBuf, codes: this.codesBuf, table: this.tableBuf, groups: n, G, cols, bits, stride };
        for (const w of this.workers) w.postMessage(batch);
        // The caller works too; then waits for the groups the workers claimed.
        runBatch(batch, ctrl, sx, sc, st);
        // Workers report failures through ERROR (their 'error' events cannot run while this thread
        // waits); a worker that died without a word shows as no progress for STALL_MS.
        let last = -1;
        let since = Date.now();
        for (let d; (d = Atomics.load(ctrl, CTRL.DONE)) < n; ) {
          if (Atomics.load(ctrl, CTRL.ERROR)) throw new Error('lut worker failed');
          if (d !== last) (last = d), (since = Date.now());
          else if (Date.now() - since > STALL_MS) throw new Error('lut worker stalled');
          Atomics.wait(ctrl, CTRL.DONE, d, 100);
        }
        if (Atomics.load(ctrl, CTRL.ERROR)) throw new Error('lut worker failed');
        exact += Atomics.load(ctrl, CTRL.EXACT);
        codes.set(sc.subarray(0, n * G * stride), g0 * G * stride);
        table.set(st.subarray(0, n * k), g0 * k);
      }
    } catch (e) {
      // A worker failed: drop the pool (and its buffers, which a stalled worker may still write)
      // and redo the tensor here: same code, same bytes.
      this.stop();
      pools.delete(this.size);
      codes.fill(0);
      exact = 0;
      for (let g = 0; g < groups; g++) exact += quantizeGroup(x, codes, table, g, G, cols, bits, stride);
      return exact;
    }
    this.idle = setTimeout(() => this.stop(), IDLE_MS).unref();
    return exact;
  }

  private start(): void {
    while (this.workers.length < this.size) {
      const w = new Worker(new URL('./lut-worker.js', import.meta.url));
      // Never keep the process alive. A worker that exits between calls is replaced at the next
      // one; one that dies during a call is caught by the ERROR word or the stall timeout.
      w.unref();
      w.on('error', () => {});
      w.on('exit', () => {
        const i = this.workers.indexOf(w);
        if (i >= 0) this.workers.splice(i, 1);
      });
      this.workers.push(w);
    }
  }

  stop(): void {
    if (this.idle) clearTimeout(this.idle);
    this.idle = undefined;
    for (const w of this.workers.splice(0)) void w.terminate();
  }

  private ensure(maxGroups: number, G: number, cols: number, k: number, stride: number): void {
    if (this.xBuf.byteLength < maxGroups * G * cols * 4) this.xBuf = new SharedArrayBuffer(maxGroups * G * cols * 4);
    if (this.codesBuf.byteLength < maxGroups * G * stride) this.codesBuf = new SharedArrayBuffer(maxGroups * G * stride);
    if (this.tableBuf.byteLength < maxGroups * k * 4) this.tableBuf = new SharedArrayBuffer(maxGroups * k * 4);
    Atomics.store(this.ctrl, CTRL.ERROR, 0);
  }
}

const pools = new Map<number, LutPool>();

function pool(workers: number): LutPool {
  let p = pools.get(workers);
  if (!p) pools.set(workers, (p = new LutPool(workers)));
  return p;
}

/** Terminate idle lut workers now (they also stop by themselves after a short idle time). */
export function closeLutWorkers(): void {
  for (const p of pools.values()) p.stop();
  pools.clear();
}
