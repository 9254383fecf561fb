// A Session is one conversation over a loaded model: its own KV cache and position. Prefill runs
// in batches of B tokens (each with Q-chunked attention); decode runs one token at a time.
import type { Gemma3Model, Observer } from '../model/gemma3.js';
import { KVCache } from './kv-cache.js';
import { LutraError } from '../util/errors.js';
import { Fp16Backend } from '../fp16/backend.js';
import { chainObservers, OverflowWatch, type OnOverflow, type OverflowEvent } from '../fp16/overflow.js';

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
}

export class Session {
  readonly cache: KVCache;
  readonly contextLength: number;
  readonly prefillBatch: number;
  readonly qChunk: number;
  /** Watches every op's output when the model runs in fp16 numerics. */
  private readonly overflowWatch: OverflowWatch | null;

  constructor(readonly model: Gemma3Model, opts: SessionOptions = {}) {
    this.contextLength = opts.contextLength ?? Math.min(model.cfg.maxPositions, 4096);
    this.prefillBatch = opts.prefillBatch ?? 64;
    this.qChunk = opts.qChunk ?? 32;
    if (this.contextLength > model.cfg.maxPositions) {
      throw new LutraError(`context length ${this.contextLength} exceeds the model's max_position_embeddings ${model.cfg.maxPositions}`);
    }
    this.cache = new KVCache(model.backend, model.cfg, this.contextLength, opts.rollbackSlack ?? 0);
    const B = model.backend;
    this.overflowWatch = B instanceof Fp16Backend ? new OverflowWatch(B, opts.onOverflow ?? 'error') : null;
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

  private checkRoom(n: number): void {
    if (this.position + n > this.contextLength) {
      throw new LutraError(`context full: ${this.position} + ${n} tokens exceed the context length ${this.contextLength}`);
    }
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
      });
      if (all && logits) all.set(logits, s * V);
      if (isLast && !all) last = (logits as Float32Array).slice();
    }
    if (all) this.checkLogits(all, this.position - n);
    else this.checkLogits(last as Float32Array, this.position - 1);
    return all ?? (last as Float32Array);
  }

  /** Feed one token; returns the next-token logits. */
  step(id: number, observer?: Observer): Float32Array {
    this.checkRoom(1);
    const logits = this.model.forward([id], this.position, this.cache, { logits: 'last', qChunk: this.qChunk, observer: this.watch(observer) }) as Float32Array;
    const out = logits.slice(); // forward's buffer is reused by the next call
    this.checkLogits(out, this.position - 1);
    return out;
  }

  /**
   * Stop at non-finite logits (rows of the vocabulary from position pos0 on), naming the position,
   * instead of sampling from them. Skipped when an fp16 overflow was let through on purpose
   * (--on-overflow continue): that run asked to go on and reports the overflow itself.
   */
  private checkLogits(logits: Float32Array, pos0: number): void {
    if (this.overflowWatch?.first) return;
    for (let i = 0; i < logits.length; i++) {
      const x = logits[i];
      if (x - x !== 0) {
        const V = this.vocabSize;
        throw new LutraError(
          `non-finite logits at position ${pos0 + Math.floor(i / V)} (token ${i % V} is ${x}); the model's activations overflowed or its weights are corrupt`,
        );
      }
    }
  }

  reset(): void {
    this.cache.reset();
    this.overflowWatch?.reset();
  }

  /** Keep only the first n tokens; false (and nothing changed) when the rings cannot step back that far. */
  truncate(n: number): boolean {
    return this.cache.truncate(n);
  }
}
