// A Session is one conversation over a loaded model: its own KV cache and position. Prefill runs
// in batches of B tokens (each with Q-chunked attention); decode runs one token at a time.
import type { CausalLM, Observer } from '../model/forward.js';
import { KVCache } from './kv-cache.js';
import { LutraError } from '../util/errors.js';
import { Fp16Backend } from '../fp16/backend.js';
import { chainObservers, OverflowWatch, type OnOverflow, type OverflowEvent } from '../fp16/overflow.js';
import { yieldToEventLoop } from '../util/yield.js';
import type { DecodeBatcher } from './batcher.js';
import type { PreparedLora } from '../adapters/apply.js';
import type { Backend, KvType } from '../backend/backend.js';

export interface SessionOptions {
  /** Maximum tokens held (prompt + generated). Defaults to min(max_position_embeddings, 4096). */
  contextLength?: number;
  /** Tokens per prefill batch. */
  prefillBatch?: number;
  /** Queries per attention chunk. */
  qChunk?: number;
  /** How many tokens truncate() may drop (extra ring slots per sliding layer). */
  rollbackSlack?: number;
  /** With fp16 numerics: stop at the first non-finite activation (default) or run on. */
  onOverflow?: OnOverflow;
  /** Runs this session's decode steps together with other sessions' (one weight pass for all). */
  batcher?: DecodeBatcher;
  /** LoRA adapters applied to every forward pass of this session (unmerged; the base weights are shared). */
  lora?: PreparedLora | null;
  /** How the KV cache stores keys and values (default f32). */
  kvType?: KvType;
}

export class Session {
  readonly cache: KVCache;
  readonly contextLength: number;
  readonly prefillBatch: number;
  readonly qChunk: number;
  /** Batches this session's decode steps with other sessions' (see decodeStep in batcher.ts), or null. */
  readonly batcher: DecodeBatcher | null;
  /** Watches every op's output when the model runs in fp16 numerics. */
  private readonly overflowWatch: OverflowWatch | null;
  /** The ids whose keys and values are in the cache, in order (tokens.length === position). */
  private ids: number[] = [];
  /** The next-token logits stepShared and stepAll return (one buffer, reused). */
  private logitsOut: Float32Array | null = null;
  private disposed = false;
  private loraSet: PreparedLora | null;

  constructor(readonly model: CausalLM, opts: SessionOptions = {}) {
    this.contextLength = opts.contextLength ?? Math.min(model.cfg.maxPositions, 4096);
    this.prefillBatch = opts.prefillBatch ?? 64;
    this.qChunk = opts.qChunk ?? 32;
    if (!Number.isInteger(this.contextLength) || this.contextLength < 1) {
      throw new LutraError(`contextLength ${this.contextLength}: expected a positive integer`);
    }
    if (this.contextLength > model.cfg.maxPositions) {
      throw new LutraError(`context length ${this.contextLength} exceeds the model's max_position_embeddings ${model.cfg.maxPositions}`);
    }
    this.cache = new KVCache(model.backend, model.cacheLayout, this.contextLength, opts.rollbackSlack ?? 0, opts.kvType ?? 'f32');
    const B = model.backend;
    this.overflowWatch = B instanceof Fp16Backend ? new OverflowWatch(B, opts.onOverflow ?? 'error') : null;
    this.batcher = opts.batcher ?? null;
    this.loraSet = opts.lora ?? null;
  }

  /** The LoRA adapters this session runs with, or null for the base model. */
  get lora(): PreparedLora | null {
    return this.loraSet;
  }

  /** Run with other adapters (or none) from now on; the cache was computed with the old ones, so it is dropped when they differ. */
  setLora(lora: PreparedLora | null): void {
    if (lora === this.loraSet) return;
    this.reset();
    this.loraSet = lora;
  }

  /** Whether a decode step may share its forward pass with other sessions' (not while an fp16 overflow watch observes every op). */
  get batchable(): boolean {
    return this.overflowWatch === null;
  }

  /** The first fp16 overflow of this session (with onOverflow 'continue'), or null. */
  get overflow(): OverflowEvent | null {
    return this.overflowWatch?.first ?? null;
  }

  private watch(observer: Observer | undefined): Observer | undefined {
    return chainObservers(this.overflowWatch?.observer, observer);
  }

  get position(): number {
    return this.cache.length;
  }

  get vocabSize(): number {
    return this.model.vocabSize;
  }

  /** The ids whose keys and values the cache holds (a copy). */
  get tokens(): number[] {
    return this.ids.slice();
  }

  /** Throws (code context_length_exceeded or disposed) unless n more tokens fit. */
  checkRoom(n: number): void {
    if (this.disposed) throw new LutraError('the session was disposed', 'disposed');
    if (this.position + n > this.contextLength) {
      throw new LutraError(`context full: ${this.position} + ${n} tokens exceed the context length ${this.contextLength}`, 'context_length_exceeded');
    }
  }

  /** How many leading ids of `ids` the cache already holds. */
  commonPrefix(ids: ArrayLike<number>): number {
    let n = 0;
    while (n < this.ids.length && n < ids.length && this.ids[n] === ids[n]) n++;
    return n;
  }

  /**
   * Prepare to feed `ids` from the start: keep the longest cached prefix of them (at most all but
   * the last id, whose logits are needed) and drop the rest of the cache. Returns how many ids are
   * reused; feed ids.slice(returned) next.
   */
  reuse(ids: ArrayLike<number>): number {
    const common = Math.min(this.commonPrefix(ids), ids.length - 1);
    if (common > 0 && this.truncate(common)) return common;
    this.reset();
    return 0;
  }

  /**
   * Feed tokens. Returns logits of the last token ([vocab]), or of every token ([n, vocab]) when
   * `all` is set.
   */
  prefill(ids: ArrayLike<number>, opts: { all?: boolean; observer?: Observer } = {}): Float32Array {
    const n = ids.length;
    if (n === 0) throw new LutraError('prefill needs at least one token');
    this.checkRoom(n);
    const V = this.vocabSize;
    const all = opts.all ? new Float32Array(n * V) : null;
    let last: Float32Array | null = null;
    for (let s = 0; s < n; s += this.prefillBatch) {
      const batch = Array.prototype.slice.call(ids, s, Math.min(n, s + this.prefillBatch)) as number[];
      const isLast = s + batch.length >= n;
      const logits = this.model.forward(batch, this.position, this.cache, {
        logits: all ? 'all' : isLast ? 'last' : 'none',
        qChunk: this.qChunk,
        observer: this.watch(opts.observer),
        lora: this.loraSet,
      });
      for (const id of batch) this.ids.push(id);
      if (all && logits) all.set(logits, s * V);
      if (isLast && !all) last = (logits as Float32Array).slice();
    }
    if (all) this.checkLogits(all, this.position - n);
    else this.checkLogits(last as Float32Array, this.position - 1);
    return all ?? (last as Float32Array);
  }

  /**
   * prefill() for services: the same batches, but the event loop runs between them (other
   * sessions' streams go on during a long prompt) and `signal` stops it between batches, leaving
   * the tokens fed so far in the cache. Returns the last token's logits, or null when aborted.
   */
  async prefillAsync(ids: ArrayLike<number>, opts: { signal?: AbortSignal; observer?: Observer } = {}): Promise<Float32Array | null> {
    const n = ids.length;
    if (n === 0) throw new LutraError('prefill needs at least one token');
    this.checkRoom(n);
    let last: Float32Array | null = null;
    for (let s = 0; s < n; s += this.prefillBatch) {
      if (opts.signal?.aborted) return null;
      const batch = Array.prototype.slice.call(ids, s, Math.min(n, s + this.prefillBatch)) as number[];
      last = this.prefill(batch, { observer: opts.observer });
      if (s + batch.length < n) await yieldToEventLoop();
    }
    return last;
  }

  /**
   * Teacher forcing: feed `ids` in prefill batches and hand every position's logits row to
   * `onRow(row, index)` as it is computed (the row is engine memory, valid during the call), so
   * the [n, vocab] matrix is never held whole.
   */
  prefillEach(ids: ArrayLike<number>, onRow: (logits: Float32Array, index: number) => void): void {
    const n = ids.length;
    if (n === 0) throw new LutraError('prefill needs at least one token');
    this.checkRoom(n);
    const V = this.vocabSize;
    for (let s = 0; s < n; s += this.prefillBatch) {
      const batch = Array.prototype.slice.call(ids, s, Math.min(n, s + this.prefillBatch)) as number[];
      const logits = this.model.forward(batch, this.position, this.cache, { logits: 'all', qChunk: this.qChunk, observer: this.watch(undefined), lora: this.loraSet }) as Float32Array;
      for (const id of batch) this.ids.push(id);
      this.checkLogits(logits.subarray(0, batch.length * V), this.position - batch.length);
      for (let i = 0; i < batch.length; i++) onRow(logits.subarray(i * V, (i + 1) * V), s + i);
    }
  }

  /** Feed one token; returns the next-token logits (a copy the caller may keep). */
  step(id: number, observer?: Observer): Float32Array {
    return this.stepShared(id, observer).slice();
  }

  /**
   * Feed one token; returns the next-token logits in this session's own buffer, which its next
   * stepShared or stepAll overwrites: the decode loop's path, which samples from them at once. A
   * fresh copy per token (1 MB at a 262k vocabulary) is garbage whose collection takes CPU from the
   * pool's threads: with it, decode ran ~7% slower in Node and up to 40% slower at 2 threads in
   * Chromium (EXPERIMENTS BR7).
   */
  stepShared(id: number, observer?: Observer): Float32Array {
    this.checkRoom(1);
    const logits = this.model.forward([id], this.position, this.cache, { logits: 'last', qChunk: this.qChunk, observer: this.watch(observer), lora: this.loraSet }) as Float32Array;
    this.ids.push(id);
    this.checkLogits(logits, this.position - 1, this.model.backend);
    return this.ownLogits(logits); // forward's buffer is reused by the next call
  }

  /** `row` copied into the session's logits buffer (made once, reused by every step). */
  private ownLogits(row: Float32Array): Float32Array {
    if (this.logitsOut === null || this.logitsOut.length !== row.length) this.logitsOut = new Float32Array(row.length);
    this.logitsOut.set(row);
    return this.logitsOut;
  }

  /**
   * Stop at non-finite logits (rows of the vocabulary from position pos0 on), naming the position,
   * instead of sampling from them. Skipped when an fp16 overflow was let through on purpose
   * (--on-overflow continue): that run asked to go on and reports the overflow itself.
   */
  /** Throw on a non-finite logit; B: the logits are the backend's own array (its scan is faster). */
  private checkLogits(logits: Float32Array, pos0: number, B?: Backend): void {
    if (this.overflowWatch?.first) return;
    let i = -1;
    if (B?.firstNonFinite) i = B.firstNonFinite(logits, logits.length);
    else for (let j = 0; j < logits.length && i < 0; j++) if (logits[j] - logits[j] !== 0) i = j;
    if (i >= 0) {
      const V = this.vocabSize;
      throw new LutraError(
        `non-finite logits at position ${pos0 + Math.floor(i / V)} (token ${i % V} is ${logits[i]}); the model's activations overflowed or its weights are corrupt`,
      );
    }
  }

  /**
   * One decode step of each of several sessions of the same model, in one forward pass (every
   * weight read once for all of them): feeds ids[i] to sessions[i] and returns each one's
   * next-token logits, in that session's own buffer as stepShared does. The sessions must be
   * distinct, batchable and have room.
   */
  static stepAll(sessions: Session[], ids: number[]): Float32Array[] {
    if (sessions.length === 1) return [sessions[0].stepShared(ids[0])];
    const model = sessions[0].model;
    for (const s of sessions) {
      if (s.model !== model || !s.batchable) throw new Error('Session.stepAll: sessions of one model without an overflow watch expected');
      s.checkRoom(1);
    }
    if (new Set(sessions).size !== sessions.length) throw new Error('Session.stepAll: a session appears twice');
    const segments = sessions.map((s, i) => ({ ids: [ids[i]], pos0: s.position, cache: s.cache, lora: s.loraSet }));
    const logits = model.forwardSegments(segments, { logits: 'last', qChunk: sessions[0].qChunk }) as Float32Array;
    const V = model.vocabSize;
    return sessions.map((s, i) => {
      s.ids.push(ids[i]);
      const row = logits.subarray(i * V, (i + 1) * V);
      s.checkLogits(row, s.position - 1, model.backend);
      return s.ownLogits(row);
    });
  }

  reset(): void {
    this.cache.reset();
    this.ids = [];
    this.overflowWatch?.reset();
  }

  /** Keep only the first n tokens; false (and nothing changed) when the rings cannot step back that far. */
  truncate(n: number): boolean {
    if (!this.cache.truncate(n)) return false;
    this.ids.length = Math.min(this.ids.length, n);
    return true;
  }

  /** Give the KV cache's memory back to the backend. The session cannot be used after. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.cache.dispose(this.model.backend);
    this.ids = [];
  }
}
