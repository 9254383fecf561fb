// The wasm backend: AssemblyScript SIMD kernels (kernels/) on a worker pool over a shared
// WebAssembly.Memory. Activations are Float32Array views of that memory; ops pass their
// addresses to the kernels. matmul and attention are split over the pool by output rows / by
// (token, head); matmuls() runs several matrices as one pool job, their rows claimed as one
// matrix's; the small elementwise ops run on the calling thread.
//
// One WebAssembly memory holds at most 4 GiB. Weights past `weightsPerMemory` of the main memory
// (which also holds the KV caches and activations) go to further memories, each with its own
// kernels instance on every thread: a matmul on such a weight copies its input there, runs there
// and copies its output back (kilobytes per decode step, against the megabytes of weights read).
import type { AttentionArgs, Backend, MatmulJob, Matrix, RopeTable } from '../backend.js';
import type { WeightFormat, WeightTensor } from '../../model/weight.js';
import { LutraError } from '../../util/errors.js';
import { Arena, GrowingBuffer, ScratchStack } from './arena.js';
import { INITIAL_PAGES, MAX_PAGES, instantiate, kernelModule, resolveSimd, type Kernels, type SimdLevel } from './kernels.js';
import { heldFormat, prepareMatrix, type HoldOptions, type WasmMatrix } from './matrix.js';
import { Pool } from './pool.js';
import { hostCores, hostEnv, hostExtraMemories, hostSharedMemory } from '../../platform/host.js';
import { auxLayout, rowBytes } from '../../model/formats.js';
import { checkActivations, type Activations } from '../reference/q8.js';
import { A_JOB, CONTROL_INTS, JOB_INTS, JOBS, MAX_JOBS, NEXT, OP_ATTENTION, OP_GELU, OP_MATMULS, OP_QUANTIZE, OP_RMSNORM, OP_ROPE, OP_SOFTCAP, setF64 } from './protocol.js';

export interface WasmBackendOptions {
  /** Threads including the calling one; default: the available cores. */
  threads?: number;
  /** Polls of the control word before a waiting thread sleeps (default 2 000, or $LUTRA_SPIN; see pool.ts). */
  spin?: number;
  /** Jobs below this many multiply-adds run on the calling thread alone (default 2^18). */
  minParallelWork?: number;
  /** 'q8' (default): int8/int4/LUT matmuls quantize activations per block of 32 and use integer dot products (LUT tables rounded to 7- or 8-bit integers). */
  activations?: Activations;
  /** Kernels build (see kernels.ts); default 'auto'. */
  simd?: SimdLevel;
  /**
   * Bytes of weights a WebAssembly memory takes before the next weight goes to a new one (default
   * 3 GiB in the main memory, leaving room for KV caches and activations, and 4 GiB − 256 MiB in
   * the others). Node only: a browser page stops at the main memory's 4 GiB.
   */
  weightsPerMemory?: number;
  /**
   * Under q8 activations, hold lut5..7 weights as int8 rows (a byte a weight, run by the int8
   * kernels) and lut1..3 as lut4 rows (run by its kernels), about twice as fast as their own
   * kernels, instead of packed (default true; see matrix.ts).
   */
  repack?: boolean;
}

/** A memory and what jobs on its weights need in it; the main one is index 0. */
interface Place {
  readonly index: number;
  readonly arena: Arena;
  readonly k: Kernels;
  /** Quantized matmul inputs (T tokens of q8 codes), shared by the pool. */
  readonly codes: GrowingBuffer;
  /** Extra memories: a matmul's input and output, copied in and out. */
  readonly io: GrowingBuffer;
  scratch: number;
  stride: number;
}

function place(index: number, arena: Arena, k: Kernels): Place {
  return { index, arena, k, codes: new GrowingBuffer(arena), io: new GrowingBuffer(arena), scratch: 0, stride: 0 };
}

const GiB = 2 ** 30;
const MAIN_WEIGHTS = 3 * GiB;
const EXTRA_WEIGHTS = 4 * GiB - 256 * 2 ** 20;

/**
 * Below this many multiply-adds a job runs on the calling thread alone: waking workers costs more.
 * 2^18 (~15 µs of one core): on a quiet machine splitting the ~1M-MAC decode matmuls of 270m pays
 * (+20% decode, EXPERIMENTS W24); with the cores shared 2^22 was better (W19). minParallelWork sets it.
 */
const MIN_PARALLEL_WORK = 1 << 18;

/**
 * Polls before a waiting thread sleeps (about 5–40 µs). On a quiet 2-vCPU VM 200 000 polls decoded
 * Gemma 4 E2B int4 20% faster in one sitting but not in the next, and under load long spins cost
 * dearly (EXPERIMENTS W2, W45): LUTRA_SPIN or the `spin` option sets it.
 */
const DEFAULT_SPIN = 2000;

/** LUTRA_SPIN, if set: the poll count for backends not given `spin`. */
function spinFromEnv(): number | undefined {
  const v = hostEnv('LUTRA_SPIN');
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new LutraError(`LUTRA_SPIN=${v}: expected a whole number of polls ≥ 0 (e.g. 2000 on a machine shared with other jobs)`);
  return n;
}

/** rmsNorm and rope over fewer elements than this run on the calling thread (a decode step's always do). */
const ELEMENTWISE_PARALLEL = 1 << 15;

/** geluMul and softcap (an f64 exp per element) over fewer elements than this run on the calling thread. */
const EXP_PARALLEL = 4096;

export class WasmBackend implements Backend {
  readonly name = 'wasm';
  readonly arena: Arena;
  private readonly k: Kernels;
  private readonly pool: Pool;
  private readonly scratchStack: ScratchStack;
  /** The main memory, then those holding weights past it. */
  private readonly places: Place[];
  private readonly main: Place;
  private readonly module: WebAssembly.Module;
  /** Where the module's static data ends in every memory it runs on: arenas start above it. */
  private readonly heapBase: number;
  private readonly weightCaps: [main: number, extra: number];
  /** Decode attention's per-part results (attentionCombine merges them). */
  private readonly partials: GrowingBuffer;
  private readonly ropeTables = new WeakMap<RopeTable, { invFreq: number; trig: number; capacity: number }>();
  readonly activations: Activations;
  /** LUT weights repacked (WasmBackendOptions.repack). */
  readonly repack: boolean;
  /** Some weight was repacked into more bytes than its file holds (for the out-of-memory message). */
  private grown = false;
  /** The kernels build in use. */
  readonly simd: 'relaxed' | 'baseline';
  private readonly minParallel: number;

  constructor(opts: WasmBackendOptions = {}) {
    // Without shared memory (a page that is not cross-origin isolated) the kernels run unshared, on this thread.
    const shared = hostSharedMemory();
    const threads = opts.threads ?? (shared ? hostCores() : 1);
    if (opts.weightsPerMemory !== undefined && !(Number.isInteger(opts.weightsPerMemory) && opts.weightsPerMemory > 0)) {
      throw new LutraError(`wasm backend: weightsPerMemory must be a positive number of bytes, got ${opts.weightsPerMemory}`);
    }
    this.activations = checkActivations(opts.activations);
    if (opts.repack !== undefined && typeof opts.repack !== 'boolean') throw new LutraError(`wasm backend: repack must be true or false, got ${JSON.stringify(opts.repack)}`);
    this.repack = opts.repack ?? true;
    this.minParallel = opts.minParallelWork ?? MIN_PARALLEL_WORK;
    if (!Number.isInteger(threads) || threads < 1) throw new LutraError(`wasm backend: threads must be a positive integer, got ${threads}`);
    if (!shared && threads > 1) throw new LutraError(`wasm backend: ${threads} threads need shared memory (SharedArrayBuffer), which this page lacks: serve it cross-origin isolated (COOP/COEP headers) or use 1 thread`);
    this.simd = resolveSimd(opts.simd, shared);
    const module = kernelModule(this.simd, shared);
    // Instantiating with a throwaway memory tells us where the module's static data ends.
    const probe = instantiate(module, new WebAssembly.Memory({ initial: INITIAL_PAGES, maximum: MAX_PAGES, shared }));
    this.heapBase = probe.heapBase();
    this.arena = new Arena(this.heapBase, shared);
    this.k = instantiate(module, this.arena.memory);
    const control = this.arena.bytes(CONTROL_INTS * 4);
    this.pool = new Pool(this.k, module, this.arena.memory, control, { threads, spin: opts.spin ?? spinFromEnv() ?? DEFAULT_SPIN });
    this.module = module;
    const per = opts.weightsPerMemory;
    this.weightCaps = [Math.min(per ?? MAIN_WEIGHTS, MAIN_WEIGHTS), Math.min(per ?? EXTRA_WEIGHTS, EXTRA_WEIGHTS)];
    this.scratchStack = new ScratchStack(this.arena);
    this.main = place(0, this.arena, this.k);
    this.places = [this.main];
    this.partials = new GrowingBuffer(this.arena);
    this.ensureThreadScratch(1 << 16);
  }

  /** WebAssembly memories in use (the main one and those holding weights past it). */
  get memories(): number {
    return this.places.length;
  }

  /** Bytes of all the backend's WebAssembly memories in use. */
  get memoryBytes(): number {
    return this.places.reduce((n, p) => n + p.arena.used, 0);
  }

  /**
   * Where a weight of about `bytes` goes: the main memory up to its weight budget, then the
   * newest other memory while it has room, else a new one.
   */
  private placeFor(bytes: number, name: string): Place {
    const [mainCap, extraCap] = this.weightCaps;
    if (this.places.length === 1 && this.arena.used + bytes <= mainCap) return this.main;
    const last = this.places[this.places.length - 1];
    if (last !== this.main && last.arena.used + bytes <= extraCap) return last;
    if (!hostExtraMemories()) {
      const hint = this.grown ? ' (LUT weights are held repacked here, lut1..3 at 4 bits a weight and lut5..7 at 8: repack false keeps them packed)' : '';
      throw new LutraError(`wasm backend: out of memory at tensor "${name}": the weights pass ${(mainCap / GiB).toFixed(2)} GiB and a page's WebAssembly memory holds at most 4 GiB${hint}`);
    }
    if (bytes > EXTRA_WEIGHTS) throw new LutraError(`wasm backend: tensor "${name}" is ${(bytes / GiB).toFixed(2)} GiB; one WebAssembly memory holds at most 4 GiB`);
    const arena = new Arena(this.heapBase, this.arena.shared);
    const k = instantiate(this.module, arena.memory);
    const p = place(this.pool.addMemory(k, arena.memory), arena, k);
    this.places.push(p);
    return p;
  }

  get threads(): number {
    return this.pool.threads;
  }

  /** Resolves once every pool thread is up (see Pool.whenReady; needed before the first job in a browser). */
  ready(): Promise<void> {
    return this.pool.whenReady();
  }

  alloc(n: number): Float32Array {
    return this.arena.f32(n);
  }

  free(a: Float32Array): void {
    this.arena.release(this.arena.addressOf(a, 'a freed array'));
  }

  scratch(n: number): Float32Array {
    return this.scratchStack.take(n);
  }

  resetScratch(): void {
    this.scratchStack.reset();
  }

  heldFormat(f: WeightFormat): WeightFormat {
    return heldFormat(f, this.hold);
  }

  private get hold(): HoldOptions {
    return { q8: this.activations === 'q8', repack: this.repack };
  }

  prepare(w: WeightTensor): Matrix {
    if (w.shape.length !== 2) return prepareMatrix(this.arena, w, this.hold, this.k); // its error names the tensor
    const [rows, cols] = w.shape;
    const held = heldFormat(w.format, this.hold);
    if (rowBytes(held, cols) > rowBytes(w.format, cols)) this.grown = true;
    const aux = auxLayout(held.kind === 'lut' ? held : w.format, rows, cols);
    // The weight's bytes as held, its scales or table (as f32, and once more as rounded LUT tables) and per-row scales.
    const bytes = rows * rowBytes(held, cols) + (aux ? 8 * aux.count : 0) + 4 * rows + 4096;
    const place = this.placeFor(bytes, w.name);
    const m: WasmMatrix = { ...prepareMatrix(place.arena, w, this.hold, place.k), mem: place.index };
    return m;
  }

  vector(w: WeightTensor): Float32Array {
    if (w.shape.length !== 1) throw new LutraError(`${w.source}: tensor "${w.name}" should be 1-D, has shape [${w.shape}]`);
    // As a 1-row matrix (a few bytes of arena per norm), decoded by the same kernel as weights.
    const m = prepareMatrix(this.arena, { ...w, shape: [1, w.shape[0]] });
    const out = this.alloc(w.shape[0]);
    this.k.decodeRow(m.desc, 0, out.byteOffset);
    return out;
  }

  /** Per-thread working memory for kernels (decoded weight rows, attention scores), in memory p. */
  private ensureThreadScratch(bytes: number, p: Place = this.main): void {
    if (bytes <= p.stride) return;
    if (p.scratch !== 0) p.arena.release(p.scratch);
    p.stride = Math.ceil(Math.max(bytes, 2 * p.stride) / 64) * 64;
    p.scratch = p.arena.bytes(p.stride * this.pool.threads);
  }

  private addr(a: Float32Array, need: number, what: string): number {
    if (a.length < need) throw new LutraError(`wasm backend: ${what} has ${a.length} elements, needs ${need}`);
    return this.arena.addressOf(a, what);
  }

  matmul(x: Float32Array, T: number, w: Matrix, out: Float32Array): void {
    this.runMatmuls(this.places[(w as WasmMatrix).mem], [{ x, T, w, out }]);
  }

  matmuls(jobs: readonly MatmulJob[]): void {
    // One pool job per memory holding the weights, of at most MAX_JOBS matmuls.
    const byMemory = new Map<number, MatmulJob[]>();
    for (const j of jobs) {
      const mem = (j.w as WasmMatrix).mem;
      const list = byMemory.get(mem);
      if (list) list.push(j);
      else byMemory.set(mem, [j]);
    }
    for (const [mem, list] of byMemory) {
      for (let i = 0; i < list.length; i += MAX_JOBS) this.runMatmuls(this.places[mem], list.slice(i, i + MAX_JOBS));
    }
  }

  /** The matmuls of `jobs` (weights in memory p) as one pool job: their rows are claimed as one matrix's. */
  private runMatmuls(p: Place, jobs: readonly MatmulJob[]): void {
    const n = jobs.length;
    const ms = jobs.map((j) => j.w as WasmMatrix);
    const xa = jobs.map((j, i) => this.addr(j.x, j.T * ms[i].cols, `matmul input for ${ms[i].name}`));
    const oa = jobs.map((j, i) => this.addr(j.out, j.T * ms[i].rows, `matmul output for ${ms[i].name}`));
    if (p !== this.main) {
      // The weights live in another memory: the inputs go there (a shared one once), the outputs come back below.
      const need = new Map<number, number>();
      jobs.forEach((j, i) => need.set(xa[i], Math.max(need.get(xa[i]) ?? 0, j.T * ms[i].cols)));
      let bytes = 0;
      for (const len of need.values()) bytes += 4 * len;
      jobs.forEach((j, i) => (bytes += 4 * j.T * ms[i].rows));
      let at = p.io.reserve(bytes);
      const there = new Map<number, number>();
      for (const [a, len] of need) {
        new Float32Array(p.arena.memory.buffer, at, len).set(new Float32Array(this.arena.memory.buffer, a, len));
        there.set(a, at);
        at += 4 * len;
      }
      for (let i = 0; i < n; i++) {
        xa[i] = there.get(xa[i])!;
        oa[i] = at;
        at += 4 * jobs[i].T * ms[i].rows;
      }
    }
    // Per thread: f32 path, 4 decoded rows; q8 GEMM, 4 rows widened to i16 and their scales per
    // block (272 B per block) and 8 floats of edge output (the q8 GEMV needs none).
    let scratch = 0, work = 0, allGemv = true;
    for (let i = 0; i < n; i++) {
      const m = ms[i], T = jobs[i].T;
      scratch = Math.max(scratch, m.q8 ? 272 * Math.ceil(m.cols / 32) + 64 : 4 * 4 * m.cols);
      work += T * m.rows * m.cols;
      if (T !== 1) allGemv = false;
    }
    this.ensureThreadScratch(scratch, p);
    const parts = work < this.minParallel ? 1 : undefined;
    const c = this.pool.ctl;
    if (ms.some((m) => m.q8)) this.quantizeInputs(p, jobs, ms, xa, parts);
    // The matmuls' rows one after another, each first row a multiple of 4 (the GEMM's tiles).
    let rows = 0;
    for (let i = 0, e = JOBS; i < n; i++, e += JOB_INTS) {
      c[e] = ms[i].desc;
      c[e + 1] = xa[i];
      c[e + 2] = jobs[i].T;
      c[e + 3] = oa[i];
      c[e + 4] = ms[i].rows;
      c[e + 5] = rows;
      rows += Math.ceil(ms[i].rows / 4) * 4;
    }
    c[A_JOB] = n;
    c[A_JOB + 1] = rows;
    // Rows claimed dynamically, large claims first (protocol.ts): the smallest claim is 1/8 of a
    // thread's rows for GEMVs, 1/2 for GEMMs. Multiples of 4 keep the GEMM's 4-row tiles whole.
    const pieces = parts === 1 ? 1 : this.pool.threads * (allGemv ? 8 : 2);
    c[A_JOB + 2] = Math.max(4, Math.ceil(rows / pieces / 4) * 4);
    Atomics.store(c, NEXT, 0);
    this.pool.run(OP_MATMULS, p.scratch, p.stride, parts, p.index);
    if (p !== this.main) {
      jobs.forEach((j, i) => j.out.set(new Float32Array(p.arena.memory.buffer, oa[i], j.T * ms[i].rows)));
    }
  }

  /**
   * Quantize the q8 jobs' inputs to their activation codes (an input shared by weights that read
   * the same layout once), and point those jobs' inputs (xa) at the codes.
   */
  private quantizeInputs(p: Place, jobs: readonly MatmulJob[], ms: readonly WasmMatrix[], xa: number[], parts: 1 | undefined): void {
    const at = new Map<string, number>();
    const first: number[] = [];
    let bytes = 0;
    const offset = jobs.map((j, i) => {
      const m = ms[i];
      if (!m.q8) return -1;
      const key = jobs.length === 1 ? '' : `${xa[i]} ${j.T} ${m.cols} ${p.k.q8Layout(m.desc, j.T)}`;
      let o = at.get(key);
      if (o === undefined) {
        at.set(key, (o = bytes));
        first.push(i);
        bytes += j.T * p.k.q8TokenBytes(m.cols);
      }
      return o;
    });
    const codes = p.codes.reserve(bytes);
    const c = this.pool.ctl;
    // A prefill's tokens are split over the pool; a few decode tokens are quantized here.
    for (const i of first) {
      const T = jobs[i].T, q = codes + offset[i];
      if (T < 4) p.k.quantizeTokens(ms[i].desc, xa[i], 0, T, q, T);
      else {
        c[A_JOB] = ms[i].desc;
        c[A_JOB + 1] = xa[i];
        c[A_JOB + 2] = T;
        c[A_JOB + 3] = q;
        this.pool.run(OP_QUANTIZE, p.scratch, p.stride, parts, p.index);
      }
    }
    for (let i = 0; i < jobs.length; i++) if (offset[i] >= 0) xa[i] = codes + offset[i];
  }

  embed(table: Matrix, ids: ArrayLike<number>, scale: number, out: Float32Array): void {
    const m = table as WasmMatrix;
    const p = this.places[m.mem];
    this.addr(out, ids.length * m.cols, 'embedding output');
    // A table in another memory: each row is decoded there, then copied out.
    const row = p === this.main ? 0 : p.io.reserve(4 * m.cols);
    for (let t = 0; t < ids.length; t++) {
      const id = ids[t];
      if (!Number.isInteger(id) || id < 0 || id >= m.rows) throw new LutraError(`token id ${id} is outside the embedding table (0..${m.rows - 1})`);
      if (p === this.main) p.k.embedRow(m.desc, id, scale, out.byteOffset + t * m.cols * 4);
      else {
        p.k.embedRow(m.desc, id, scale, row);
        out.set(new Float32Array(p.arena.memory.buffer, row, m.cols), t * m.cols);
      }
    }
  }

  rmsNorm(x: Float32Array, rows: number, dim: number, gain: Float32Array, eps: number, out: Float32Array): void {
    const c = this.pool.ctl;
    c[A_JOB] = this.addr(x, rows * dim, 'rmsNorm input');
    c[A_JOB + 1] = rows;
    c[A_JOB + 2] = dim;
    c[A_JOB + 3] = this.addr(gain, dim, 'rmsNorm gain');
    setF64(c, A_JOB + 4, eps);
    c[A_JOB + 6] = this.addr(out, rows * dim, 'rmsNorm output');
    this.pool.run(OP_RMSNORM, this.main.scratch, this.main.stride, rows * dim < ELEMENTWISE_PARALLEL ? 1 : undefined);
  }

  rope(x: Float32Array, T: number, heads: number, headDim: number, pos0: number, table: RopeTable): void {
    const trig = this.ropeTrig(table, pos0 + T);
    const c = this.pool.ctl;
    c[A_JOB] = this.addr(x, T * heads * headDim, 'rope input');
    c[A_JOB + 1] = T;
    c[A_JOB + 2] = heads;
    c[A_JOB + 3] = headDim;
    c[A_JOB + 4] = pos0;
    c[A_JOB + 5] = trig;
    this.pool.run(OP_ROPE, this.main.scratch, this.main.stride, T * heads * headDim < ELEMENTWISE_PARALLEL ? 1 : undefined);
  }

  /**
   * The cos/sin table of `table` covering positions 0..positions − 1: computed once per position
   * (not once per layer and call), grown in steps of 1024 positions with the rows already computed
   * copied. Only new rows are computed: sin and cos cost ~30 ns each in the kernels' f64 code, and
   * recomputing two tables from 0 when they doubled to 32k positions stalled the first decode step
   * past a 16k prompt by ~0.5 s (EXPERIMENTS LC4).
   */
  private ropeTrig(table: RopeTable, positions: number): number {
    let t = this.ropeTables.get(table);
    if (t === undefined) {
      const copy = this.alloc(table.invFreq.length);
      copy.set(table.invFreq);
      t = { invFreq: copy.byteOffset, trig: 0, capacity: 0 };
      this.ropeTables.set(table, t);
    }
    if (positions > t.capacity) {
      const half = table.invFreq.length;
      const capacity = Math.max(256, Math.ceil(positions / 1024) * 1024);
      const trig = this.arena.bytes(capacity * half * 8);
      if (t.trig !== 0) {
        this.arena.copy(trig, t.trig, t.capacity * half * 8);
        this.arena.release(t.trig);
      }
      this.k.ropeTrig(t.invFreq, half, t.capacity, capacity, trig);
      t.trig = trig;
      t.capacity = capacity;
    }
    return t.trig;
  }

  attention(a: AttentionArgs): void {
    const { T, numHeads, numKvHeads, headDim, cache, pos0 } = a;
    const qDim = numHeads * headDim;
    const kvDim = numKvHeads * headDim;
    const c = this.pool.ctl;
    const j = A_JOB;
    c[j] = this.addr(a.q, T * qDim, 'attention q');
    c[j + 1] = this.addr(a.k, T * kvDim, 'attention k');
    c[j + 2] = this.addr(a.v, T * kvDim, 'attention v');
    const half = cache.type === 'f16';
    const cacheElements = half ? Math.ceil((cache.capacity * kvDim) / 2) : cache.capacity * kvDim;
    c[j + 3] = this.addr(cache.k, cacheElements, 'KV cache keys');
    c[j + 4] = this.addr(cache.v, cacheElements, 'KV cache values');
    c[j + 5] = cache.capacity;
    c[j + 6] = cache.ring ? 1 : 0;
    c[j + 7] = pos0;
    c[j + 8] = numHeads;
    c[j + 9] = numKvHeads;
    c[j + 10] = headDim;
    this.pool.ctlF[j + 11] = a.scale;
    c[j + 12] = a.window;
    c[j + 13] = this.addr(a.out, T * qDim, 'attention output');
    // Units: a block of up to 4 tokens × one kv head with all its query heads (the block's rows
    // share every key and value block they read: long prefills read K and V a quarter as often),
    // one token per unit where bigger blocks would leave threads idle. In a decode step with fewer
    // units than threads, each one's keys are cut in `split` runs (one unit each) merged afterwards;
    // that happens only with one token per unit (qBlock ≤ T / threads keeps units ≥ threads).
    const group = numHeads / numKvHeads;
    const qBlock = Math.max(1, Math.min(4, Math.floor(T / this.threads)));
    const pairs = Math.ceil(T / qBlock) * numKvHeads;
    const keys = a.window > 0 ? Math.min(a.window, pos0 + T) : pos0 + T;
    const blockKeys = a.window > 0 ? Math.min(a.window + qBlock - 1, pos0 + T) : pos0 + T;
    const parallel = T * numHeads * keys * headDim >= this.minParallel;
    const split = parallel && pairs < this.threads && keys >= 16 * this.threads ? this.threads : 1;
    c[j + 14] = pairs * split;
    c[j + 15] = split;
    const partials = split > 1 ? this.partials.reserve(pairs * group * split * (headDim + 2) * 4) : 0;
    c[j + 16] = partials;
    c[j + 17] = half ? 1 : 0;
    c[j + 18] = T;
    c[j + 19] = qBlock;
    // Per unit: key and value addresses, scores per query row, a slot per row, a block of 16 widened rows and their addresses.
    this.ensureThreadScratch(4 * blockKeys * (2 + qBlock * group) + 4 * qBlock * group + 64 * headDim + 160);
    const parts = pairs * split === 1 || !parallel ? 1 : undefined;
    Atomics.store(c, NEXT, 0);
    this.pool.run(OP_ATTENTION, this.main.scratch, this.main.stride, parts);
    if (split > 1) this.k.attentionCombine(partials, pairs, group, split, headDim, c[j + 13]);
  }

  geluMul(gate: Float32Array, up: Float32Array, n: number, out: Float32Array): void {
    const c = this.pool.ctl;
    c[A_JOB] = this.addr(gate, n, 'geluMul gate');
    c[A_JOB + 1] = this.addr(up, n, 'geluMul up');
    c[A_JOB + 2] = this.addr(out, n, 'geluMul output');
    c[A_JOB + 3] = n;
    this.pool.run(OP_GELU, this.main.scratch, this.main.stride, n < EXP_PARALLEL ? 1 : undefined);
  }

  softcap(x: Float32Array, n: number, cap: number): void {
    const c = this.pool.ctl;
    c[A_JOB] = this.addr(x, n, 'softcap input');
    c[A_JOB + 1] = n;
    setF64(c, A_JOB + 2, cap);
    this.pool.run(OP_SOFTCAP, this.main.scratch, this.main.stride, n < EXP_PARALLEL ? 1 : undefined);
  }

  add(acc: Float32Array, x: Float32Array, n: number): void {
    this.k.add(this.addr(acc, n, 'add accumulator'), this.addr(x, n, 'add input'), n);
  }

  addProduct(acc: Float32Array, x: Float32Array, T: number, k: number, w: Float32Array, n: number): void {
    this.k.addProduct(this.addr(acc, T * n, 'addProduct accumulator'), this.addr(x, T * k, 'addProduct input'), T, k, this.addr(w, k * n, 'addProduct weights'), n);
  }

  scale(x: Float32Array, n: number, s: number): void {
    this.k.scale(this.addr(x, n, 'scale input'), n, s);
  }

  firstNonFinite(x: Float32Array, n: number): number {
    return this.k.firstNonFinite(this.addr(x, n, 'finite check input'), n);
  }

  roundToF16(x: Float32Array, n: number): number {
    return this.k.roundF16(this.addr(x, n, 'fp16 rounding input'), n);
  }

  dispose(): void {
    this.pool.dispose();
  }
}
