// The generation loop every caller shares (library, CLI, server): reuse the session's cached
// prefix, prefill the rest in batches, then sample and decode one token at a time, turning ids
// into text pieces as they become complete. Stops at a stop token, a stop string, the token
// limit, a full context, or an AbortSignal, checked before every token; the event loop runs
// between tokens and between prefill batches.
import type { Session } from './session.js';
import { Sampler, type SamplerOptions } from './sampler.js';
import { checkSignal } from '../util/options.js';
import { LutraError } from '../util/errors.js';
import { describeOverflow } from '../fp16/overflow.js';
import { Decoder, parseSpeculative, type SpeculativeOption, type SpeculativeStats } from './speculative.js';

/** Why generation ended: a stop token or string, the token limit or a full context, or the caller's signal. */
export type FinishReason = 'stop' | 'length' | 'abort';

export interface GenerateOptions extends SamplerOptions {
  /** Tokens to generate at most (default 256). */
  maxTokens?: number;
  /** Strings that end generation; the text stops before the first one that appears. */
  stop?: string | string[];
  /** Stops generation within one token; the session stays usable. */
  signal?: AbortSignal;
  /**
   * Speculative decoding (default off): 'lookup' (n-grams of the prompt and output), 'suffix'
   * (earlier outputs of this loaded model) or { draft: model } (a model sharing the tokenizer).
   * The output is the same as without it (greedy) or distributed the same (sampling). Sessions
   * need rollbackSlack ≥ the draft length + 1 (the library's have 64).
   */
  speculative?: SpeculativeOption;
}

/** What a tokenizer must offer the loop. */
export interface TextCodec {
  readonly stopIds: Set<number>;
  decode(ids: number[], skipSpecial?: boolean): string;
}

export interface GenerationChunk {
  /** New text (may be empty while a multi-byte character or a possible stop string is pending). */
  text: string;
  /** Ids sampled since the previous chunk. */
  tokenIds: number[];
  /** Set on the last chunk only. */
  finishReason: FinishReason | null;
}

export interface GenerationUsage {
  /** Tokens of the prompt, cached ones included. */
  promptTokens: number;
  /** Prompt tokens whose keys and values were already in the session's cache (not computed again). */
  cachedTokens: number;
  /** Tokens sampled (a stop token counts; it is not part of the text). */
  completionTokens: number;
}

export interface GenerationTimings {
  /** Prompt tokens computed (promptTokens − cachedTokens). */
  promptEvaluated: number;
  prefillMs: number;
  /** Decode steps run (one per sampled token after the first). */
  decodeSteps: number;
  /** From the end of prefill to the end of generation (sampling and decode steps). */
  decodeMs: number;
}

/** finishReason in detail. */
export type StoppedBy = 'stop-token' | 'stop-string' | 'max-tokens' | 'context' | 'abort';

export interface GenerationResult {
  text: string;
  tokenIds: number[];
  finishReason: FinishReason;
  stoppedBy: StoppedBy;
  usage: GenerationUsage;
  timings: GenerationTimings;
  /** With fp16 numerics and onOverflow 'continue': the session's first overflow, described (the text after it is not meaningful). */
  overflow?: string;
  /** With speculative decoding: what was drafted and kept. */
  speculative?: SpeculativeStats;
}

/** The loop's chunks, then its result (the generator's return value). */
export async function* generate(
  session: Session,
  codec: TextCodec,
  promptIds: number[],
  opts: GenerateOptions = {},
): AsyncGenerator<GenerationChunk, GenerationResult> {
  const maxTokens = opts.maxTokens ?? 256;
  if (!Number.isInteger(maxTokens) || maxTokens < 1) throw new LutraError(`maxTokens ${JSON.stringify(maxTokens)}: expected a positive integer`);
  if (promptIds.length === 0) throw new LutraError('the prompt has no tokens');
  checkSignal(opts.signal);
  const stops = normaliseStops(opts.stop);
  const sampler = new Sampler(opts);
  const speculative = parseSpeculative(opts.speculative);
  if (promptIds.length >= session.contextLength) {
    throw new LutraError(
      `the prompt is ${promptIds.length} tokens; the context holds ${session.contextLength} (with room for at least one generated token)`,
      'context_length_exceeded',
    );
  }

  const cached = session.reuse(promptIds);
  const history = promptIds.slice();
  const t0 = performance.now();
  const usage: GenerationUsage = { promptTokens: promptIds.length, cachedTokens: cached, completionTokens: 0 };
  const timings: GenerationTimings = { promptEvaluated: promptIds.length - cached, prefillMs: 0, decodeSteps: 0, decodeMs: 0 };
  const ids: number[] = [];
  const text = new TextAssembler(codec, stops);
  let stoppedBy: StoppedBy = 'abort';
  let t1 = t0;
  const decoder = new Decoder(session, sampler, speculative, opts, promptIds);
  const finish = (reason: FinishReason): GenerationResult => {
    timings.decodeMs = performance.now() - t1;
    const overflow = session.overflow ? { overflow: describeOverflow(session.overflow) } : {};
    const stats = decoder.finish(history);
    return { text: text.final, tokenIds: ids, finishReason: reason, stoppedBy, usage, timings, ...overflow, ...(stats ? { speculative: stats } : {}) };
  };

  try {
    const logits = await session.prefillAsync(promptIds.slice(cached), { signal: opts.signal });
    t1 = performance.now();
    timings.prefillMs = t1 - t0;
    if (logits === null) {
      yield { text: '', tokenIds: [], finishReason: 'abort' };
      return finish('abort');
    }
    let reason: FinishReason | null = null;
    // Tokens decided but not yet emitted (a verify pass can decide several).
    const pending = [decoder.first(logits, history)];
    for (;;) {
      if (opts.signal?.aborted) {
        reason = 'abort';
        break;
      }
      const id = pending.shift()!;
      ids.push(id);
      history.push(id);
      usage.completionTokens++;
      if (codec.stopIds.has(id)) {
        reason = 'stop';
        stoppedBy = 'stop-token';
        break;
      }
      const piece = text.push(id);
      if (text.stopped) {
        reason = 'stop';
        stoppedBy = 'stop-string';
        yield { text: piece, tokenIds: [id], finishReason: null };
        break;
      }
      if (ids.length >= maxTokens || history.length > session.contextLength) {
        reason = 'length';
        stoppedBy = ids.length >= maxTokens ? 'max-tokens' : 'context';
        yield { text: piece, tokenIds: [id], finishReason: null };
        break;
      }
      yield { text: piece, tokenIds: [id], finishReason: null };
      if (pending.length > 0) continue;
      // One pass (the event loop runs during it): a plain step, or a verify pass over drafts.
      const next = await decoder.next(history, maxTokens - ids.length);
      pending.push(...next);
      timings.decodeSteps += next.length;
    }
    yield { text: text.flush(), tokenIds: [], finishReason: reason };
    return finish(reason);
  } finally {
    decoder.close();
  }
}

function normaliseStops(stop: string | string[] | undefined): string[] {
  const list = stop === undefined ? [] : typeof stop === 'string' ? [stop] : stop;
  if (!Array.isArray(list) || list.some((s) => typeof s !== 'string')) throw new LutraError('stop: expected a string or an array of strings');
  return list.filter((s) => s.length > 0);
}

/**
 * Ids → text pieces. Decodes a short window of recent ids (not the whole list each time) and
 * holds back an incomplete UTF-8 character and any tail that could be the start of a stop string.
 */
export class TextAssembler {
  private ids: number[] = [];
  /** Ids before prefixOffset are settled; text of ids[prefixOffset..readOffset) was already emitted. */
  private prefixOffset = 0;
  private readOffset = 0;
  /** All text decoded so far (before any stop string). */
  private decoded = '';
  /** How much of `decoded` has been handed out. */
  private emitted = 0;
  stopped = false;

  constructor(private readonly codec: TextCodec, private readonly stops: string[] = []) {}

  /** Add one id; returns the text that is now safe to show. */
  push(id: number): string {
    if (this.stopped) return '';
    this.ids.push(id);
    const prefix = this.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const full = this.decode(this.ids.slice(this.prefixOffset));
    if (full.length > prefix.length && !full.endsWith('\uFFFD')) {
      this.decoded += full.slice(prefix.length);
      this.prefixOffset = this.readOffset;
      this.readOffset = this.ids.length;
    }
    return this.release(false);
  }

  private decode(ids: number[]): string {
    return ids.length === 0 ? '' : this.codec.decode(ids);
  }

  /** The rest of the text at the end of generation. */
  flush(): string {
    return this.release(true);
  }

  /** The whole generated text, cut before a stop string. */
  get final(): string {
    return this.decoded.slice(0, this.emittedLimit(true));
  }

  private release(end: boolean): string {
    const limit = this.emittedLimit(end);
    const piece = this.decoded.slice(this.emitted, limit);
    this.emitted = Math.max(this.emitted, limit);
    return piece;
  }

  /** How far the text may be shown: up to a stop string, else all but a possible stop-string start. */
  private emittedLimit(end: boolean): number {
    const d = this.decoded;
    let cut = d.length;
    for (const s of this.stops) {
      const at = d.indexOf(s, Math.max(0, this.emitted - s.length));
      if (at !== -1 && at < cut) {
        cut = at;
        this.stopped = true;
      }
    }
    if (this.stopped) {
      this.decoded = d.slice(0, cut);
      return cut;
    }
    if (end) return d.length;
    let hold = 0;
    for (const s of this.stops) {
      for (let k = Math.min(s.length - 1, d.length); k > hold; k--) {
        if (d.endsWith(s.slice(0, k))) {
          hold = k;
          break;
        }
      }
    }
    return d.length - hold;
  }
}

/**
 * One line of statistics for stderr: prefill and decode rates. `aborted`: what stopped a generation
 * whose finish reason is 'abort' (a CLI knows: Ctrl-C, or its output closed).
 */
export function formatStats(r: GenerationResult, aborted = 'interrupted'): string {
  const rate = (n: number, ms: number) => (ms > 0 ? ((n * 1000) / ms).toFixed(2) : '∞');
  const t = r.timings;
  const cached = r.usage.cachedTokens > 0 ? ` (+${r.usage.cachedTokens} cached)` : '';
  const stopped = r.stoppedBy === 'abort' ? aborted : r.stoppedBy;
  return (
    `prefill: ${t.promptEvaluated} tokens${cached} in ${(t.prefillMs / 1000).toFixed(2)} s (${rate(t.promptEvaluated, t.prefillMs)} tok/s); ` +
    `generated ${r.usage.completionTokens} tokens; decode: ${t.decodeSteps} steps in ${(t.decodeMs / 1000).toFixed(2)} s (${rate(t.decodeSteps, t.decodeMs)} tok/s); stopped by ${stopped}` +
    (r.speculative ? `; ${formatSpeculative(r.speculative)}` : '')
  );
}

/** The speculative counters in a few words: source, acceptance, tokens per forward pass. */
export function formatSpeculative(s: SpeculativeStats): string {
  return (
    `speculative ${s.source}: ${s.accepted}/${s.drafted} drafted tokens accepted (${(100 * s.acceptanceRate).toFixed(1)} %), ` +
    `${s.tokensPerPass.toFixed(2)} tokens per pass over ${s.passes} passes (${s.verifyPasses} verifying)`
  );
}
