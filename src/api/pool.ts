// Sessions over one loaded model, reused across requests. A request takes the idle session
// whose cached tokens share the longest prefix with its prompt (a follow-up turn of a
// conversation finds the session that holds its history and prefills only the new tokens),
// waits in a bounded FIFO queue when all are busy, and gives the session back when done.
// Forward passes never overlap: each is synchronous; sessions take turns between tokens, and
// their decode steps share one pass when the pool has a batcher.
import type { CausalLM } from '../model/forward.js';
import type { KvType } from '../backend/backend.js';
import { Session } from '../runtime/session.js';
import { LutraError } from '../util/errors.js';
import type { OnOverflow } from '../fp16/overflow.js';
import type { DecodeBatcher } from '../runtime/batcher.js';
import type { PreparedLora } from '../adapters/apply.js';

export interface SessionPoolOptions {
  /** Sessions that may generate at once (each holds its own KV cache). */
  parallel: number;
  /** Requests that may wait for a session; more are refused with code queue_full. */
  queueLimit: number;
  contextLength: number;
  prefillBatch?: number;
  /** Tokens a session may step back to reuse a cached prefix that ends a little differently. */
  rollbackSlack?: number;
  /** With fp16 numerics: stop at the first overflow (default) or run on. */
  onOverflow?: OnOverflow;
  /** Shared by the sessions: their decode steps run together (see runtime/batcher.ts). */
  batcher?: DecodeBatcher;
  /** How the sessions' KV caches store keys and values (default f32). */
  kvType?: KvType;
}

export interface Lease {
  session: Session;
  /** Give the session back (its cache stays, for the next request that shares its prefix). */
  release(): void;
}

interface Waiter {
  ids: number[];
  lora: PreparedLora | null;
  resolve: (l: Lease) => void;
  reject: (e: Error) => void;
  signal?: AbortSignal;
  onAbort?: () => void;
}

export class SessionPool {
  private readonly idle: Session[] = [];
  private readonly queue: Waiter[] = [];
  private created = 0;
  private busy = 0;
  private closed = false;

  constructor(private readonly model: CausalLM, readonly opts: SessionPoolOptions) {
    if (!Number.isInteger(opts.parallel) || opts.parallel < 1) throw new LutraError(`parallel ${opts.parallel}: expected a positive integer`);
    if (!Number.isInteger(opts.queueLimit) && opts.queueLimit !== Infinity) throw new LutraError(`queueLimit ${opts.queueLimit}: expected an integer ≥ 0`);
    if (opts.queueLimit < 0) throw new LutraError(`queueLimit ${opts.queueLimit}: expected an integer ≥ 0`);
  }

  /** Sessions generating now. */
  get active(): number {
    return this.busy;
  }

  /** Requests waiting for a session. */
  get waiting(): number {
    return this.queue.length;
  }

  /** Sessions that exist (busy or idle with a cached prefix). */
  get sessions(): number {
    return this.created;
  }

  /**
   * A session for a prompt of `ids` run with `lora` (null: the base model): the idle one sharing
   * the longest prefix computed with the same adapters, a new one, or the next free (its cache
   * dropped when its adapters differ).
   */
  acquire(ids: number[], signal?: AbortSignal, lora: PreparedLora | null = null): Promise<Lease> {
    if (this.closed) return Promise.reject(new LutraError('the model was disposed', 'disposed'));
    if (signal?.aborted) return Promise.reject(abortError());
    const now = this.take(ids, lora);
    if (now) return Promise.resolve(now);
    if (this.queue.length >= this.opts.queueLimit) {
      return Promise.reject(
        new LutraError(`all ${this.opts.parallel} sessions are busy and ${this.queue.length} requests are waiting (the queue limit); try again later`, 'queue_full'),
      );
    }
    return new Promise<Lease>((resolve, reject) => {
      const w: Waiter = { ids, lora, resolve, reject, signal };
      if (signal) {
        w.onAbort = () => {
          const i = this.queue.indexOf(w);
          if (i >= 0) this.queue.splice(i, 1);
          reject(abortError());
        };
        signal.addEventListener('abort', w.onAbort, { once: true });
      }
      this.queue.push(w);
    });
  }

  private take(ids: number[], lora: PreparedLora | null): Lease | null {
    let session: Session | undefined;
    if (this.idle.length > 0) {
      // Longest shared prefix; among equals the least recently used (front of the list).
      let best = 0;
      let bestLen = -1;
      this.idle.forEach((s, i) => {
        const n = s.lora === lora ? s.commonPrefix(ids) : 0;
        if (n > bestLen) {
          best = i;
          bestLen = n;
        }
      });
      // While sessions may still be created, take a cached one only when it holds at least half
      // of the prompt (as llama.cpp's slot similarity): a fresh one keeps other conversations' caches.
      if (2 * bestLen >= ids.length || this.created >= this.opts.parallel) session = this.idle.splice(best, 1)[0];
    }
    if (!session) {
      if (this.created >= this.opts.parallel) return null;
      session = new Session(this.model, {
        contextLength: this.opts.contextLength,
        prefillBatch: this.opts.prefillBatch,
        rollbackSlack: this.opts.rollbackSlack ?? 0,
        onOverflow: this.opts.onOverflow,
        batcher: this.opts.batcher,
        kvType: this.opts.kvType,
      });
      this.created++;
    }
    session.setLora(lora);
    this.busy++;
    let released = false;
    const s = session;
    return {
      session: s,
      release: () => {
        if (released) return;
        released = true;
        this.busy--;
        if (this.closed) {
          s.dispose();
          this.created--;
          return;
        }
        this.idle.push(s);
        this.next();
      },
    };
  }

  private next(): void {
    while (this.queue.length > 0) {
      const w = this.queue[0];
      const lease = this.take(w.ids, w.lora);
      if (!lease) return;
      this.queue.shift();
      if (w.signal && w.onAbort) w.signal.removeEventListener('abort', w.onAbort);
      w.resolve(lease);
    }
  }

  /** Drop idle sessions (their caches go back to the backend); busy ones go when released. */
  trim(): void {
    for (const s of this.idle.splice(0)) {
      s.dispose();
      this.created--;
    }
  }

  /** Refuse new requests, reject the waiting ones, free idle sessions. */
  close(): void {
    this.closed = true;
    for (const w of this.queue.splice(0)) w.reject(new LutraError('the model was disposed', 'disposed'));
    this.trim();
  }
}

function abortError(): Error {
  const e = new Error('the operation was aborted');
  e.name = 'AbortError';
  return e;
}
