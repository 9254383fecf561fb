// Batched decode across sessions. On a CPU a decode step reads every weight once for a single
// token; a forward over several tokens reads the same bytes (the matmuls become a small GEMM).
// A DecodeBatcher (one per loaded model) collects the decode steps that sessions ask for within
// one event-loop turn and runs them as one forward pass, each session at its own position
// against its own KV cache; each gets its own logits row back. Sessions join and leave between
// passes; a lone session runs as before. Prefills stay per session.
import { Session } from './session.js';
import { yieldToEventLoop } from '../util/yield.js';

/** Rows per pass at most by default: past this the GEMM stops being nearly free (docs/EXPERIMENTS.md). */
export const DEFAULT_MAX_BATCH = 16;

interface Request {
  session: Session;
  id: number;
  resolve: (logits: Float32Array) => void;
  reject: (e: unknown) => void;
}

export interface BatchStats {
  /** Forward passes run for decode steps. */
  passes: number;
  /** Decode tokens computed over those passes. */
  tokens: number;
  /** tokens / passes: tokens per weight pass (1 without concurrency). */
  tokensPerPass: number;
  /** The most tokens one pass carried. */
  maxTokensPerPass: number;
}

export class DecodeBatcher {
  private pending: Request[] = [];
  private scheduled = false;
  private passes = 0;
  private tokens = 0;
  private maxRows = 0;

  /** `maxBatch`: sessions per forward pass at most (more wait for the next pass of the same turn). */
  constructor(readonly maxBatch = DEFAULT_MAX_BATCH) {
    if (!Number.isInteger(maxBatch) || maxBatch < 1) throw new Error(`DecodeBatcher: maxBatch ${maxBatch}: expected a positive integer`);
  }

  /**
   * Feed `id` to `session` and resolve with its next-token logits, computed together with the
   * other sessions that asked in this turn (in the session's own buffer: see Session.stepShared).
   */
  step(session: Session, id: number): Promise<Float32Array> {
    return new Promise((resolve, reject) => {
      this.pending.push({ session, id, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        // Every session that resumes in this turn (their consumers run on microtasks) joins.
        void yieldToEventLoop().then(() => this.flush());
      }
    });
  }

  get stats(): BatchStats {
    return { passes: this.passes, tokens: this.tokens, tokensPerPass: this.passes > 0 ? this.tokens / this.passes : 0, maxTokensPerPass: this.maxRows };
  }

  private flush(): void {
    this.scheduled = false;
    const ready: Request[] = [];
    const seen = new Set<Session>();
    for (const r of this.pending.splice(0)) {
      try {
        r.session.checkRoom(1);
      } catch (e) {
        r.reject(e);
        continue;
      }
      // A session watched op by op (fp16 overflow), or asking twice, runs its step alone.
      if (!r.session.batchable || seen.has(r.session)) this.run([r]);
      else {
        seen.add(r.session);
        ready.push(r);
      }
    }
    for (let i = 0; i < ready.length; i += this.maxBatch) this.run(ready.slice(i, i + this.maxBatch));
  }

  private run(batch: Request[]): void {
    let logits: Float32Array[];
    try {
      logits = Session.stepAll(
        batch.map((r) => r.session),
        batch.map((r) => r.id),
      );
    } catch (e) {
      for (const r of batch) r.reject(e);
      return;
    }
    this.passes++;
    this.tokens += batch.length;
    this.maxRows = Math.max(this.maxRows, batch.length);
    batch.forEach((r, i) => r.resolve(logits[i]));
  }
}

/**
 * The decode step of generate(): through the session's batcher when it has one, else a step of
 * its own followed by a turn of the event loop (so other sessions' tokens go on).
 */
export async function decodeStep(session: Session, id: number): Promise<Float32Array> {
  if (session.batcher) return session.batcher.step(session, id);
  const logits = session.stepShared(id); // read before this session's next step, as generate() does
  await yieldToEventLoop();
  return logits;
}
