// Draft sources for speculative decoding: cheap guesses of the next few tokens that the target
// model then checks in one forward pass. Prompt lookup copies what followed an earlier occurrence
// of the last few tokens; suffix decoding follows the most frequent continuation in the earlier
// outputs of the same loaded model; a draft model samples from a smaller model that shares the
// tokenizer.
import type { CausalLM } from '../model/forward.js';
import { Session } from './session.js';
import { Sampler, type SamplerOptions, type TokenDistribution } from './sampler.js';
import { LutraError } from '../util/errors.js';

export interface DraftProposal {
  /** Proposed ids, in order (possibly none). */
  ids: number[];
  /** The distribution each id was drawn from, or null for a deterministic guess (a point mass). */
  q: (TokenDistribution | null)[];
}

export interface DraftSource {
  /** 'lookup', 'suffix' or 'draft'. */
  readonly name: string;
  /** At most `k` ids likely to follow `history` (the prompt and every token generated so far). */
  propose(history: readonly number[], k: number): DraftProposal;
  /** Tokens the target produced (accepted drafts and the token after them), in order. */
  observe?(tokens: readonly number[]): void;
  /** Generation ended: release what the source holds for it. */
  close?(): void;
}

/**
 * Prompt lookup: find the latest earlier occurrence of the last n tokens (n from `maxNgram` down
 * to `minNgram`) in the prompt and the text generated so far, and propose what followed it.
 */
export class LookupDraft implements DraftSource {
  readonly name = 'lookup';
  constructor(private readonly maxNgram = 3, private readonly minNgram = 1) {}

  propose(history: readonly number[], k: number): DraftProposal {
    const L = history.length;
    for (let n = Math.min(this.maxNgram, L - 1); n >= this.minNgram; n--) {
      // Latest start s < L − n with history[s..s+n) equal to the last n tokens.
      for (let s = L - n - 1; s >= 0; s--) {
        let j = 0;
        while (j < n && history[s + j] === history[L - n + j]) j++;
        if (j < n) continue;
        const ids = history.slice(s + n, Math.min(L, s + n + k)) as number[];
        if (ids.length > 0) return { ids, q: ids.map(() => null) };
      }
    }
    return { ids: [], q: [] };
  }
}

/**
 * Counts of next tokens after every context of 1..maxContext tokens seen in earlier outputs: a
 * trie of n-grams flattened into one map. One index per loaded model, shared by every request and
 * conversation of the process; it is cleared when it holds `maxContexts` contexts.
 */
export class SuffixIndex {
  private readonly next = new Map<string, Map<number, number>>();
  constructor(readonly maxContext = 6, readonly maxContexts = 2_000_000) {}

  get size(): number {
    return this.next.size;
  }

  /** Record that `tokens[i]` followed each context ending at i − 1 (only contexts inside `tokens`). */
  add(tokens: readonly number[], from = 0): void {
    for (let i = Math.max(1, from); i < tokens.length; i++) {
      let key = '';
      for (let n = 1; n <= this.maxContext && i - n >= 0; n++) {
        key = n === 1 ? String(tokens[i - 1]) : `${tokens[i - n]},${key}`;
        let counts = this.next.get(key);
        if (!counts) {
          if (this.next.size >= this.maxContexts) this.next.clear();
          counts = new Map();
          this.next.set(key, counts);
        }
        counts.set(tokens[i], (counts.get(tokens[i]) ?? 0) + 1);
      }
    }
  }

  /** The most frequent continuation of the longest known context (≥ minContext tokens) ending `seq`, or -1. */
  predict(seq: readonly number[], minContext: number): number {
    let key = '';
    let best = -1;
    for (let n = 1; n <= this.maxContext && n <= seq.length; n++) {
      key = n === 1 ? String(seq[seq.length - 1]) : `${seq[seq.length - n]},${key}`;
      const counts = this.next.get(key);
      if (!counts) break;
      if (n < minContext) continue;
      let top = -1;
      let topCount = 0;
      for (const [id, c] of counts) if (c > topCount || (c === topCount && id < top)) [top, topCount] = [id, c];
      best = top;
    }
    return best;
  }
}

const suffixIndexes = new WeakMap<CausalLM, SuffixIndex>();

/** The suffix index of a loaded model (created on first use). */
export function suffixIndexFor(model: CausalLM): SuffixIndex {
  let index = suffixIndexes.get(model);
  if (!index) {
    index = new SuffixIndex();
    suffixIndexes.set(model, index);
  }
  return index;
}

/**
 * Suffix decoding: extend the history token by token with the index's most frequent continuation.
 * The answer being generated joins the index as it grows, so a later turn or request (and the
 * rest of this one) can draft from it; the prompt does not (that is prompt lookup's part).
 */
export class SuffixDraft implements DraftSource {
  readonly name = 'suffix';
  private readonly output: number[] = [];

  constructor(private readonly index: SuffixIndex, private readonly minContext = 2, private readonly tail: readonly number[] = []) {
    // The last prompt tokens give the first generated tokens their context.
    this.output.push(...tail.slice(-index.maxContext));
  }

  propose(history: readonly number[], k: number): DraftProposal {
    const seq = history.slice(-this.index.maxContext) as number[];
    const ids: number[] = [];
    while (ids.length < k) {
      const id = this.index.predict(seq, this.minContext);
      if (id < 0) break;
      ids.push(id);
      seq.push(id);
      seq.shift();
    }
    return { ids, q: ids.map(() => null) };
  }

  observe(tokens: readonly number[]): void {
    const from = this.output.length;
    this.output.push(...tokens);
    this.index.add(this.output, from);
  }
}

/** What a draft model must offer: a loaded engine (a LutraModel has one). */
export interface DraftModel {
  readonly engine: CausalLM;
}

/**
 * A draft model sharing the tokenizer: it keeps its own session in step with the history and
 * samples k tokens with the same sampler settings, reporting each token's distribution.
 */
export class ModelDraft implements DraftSource {
  readonly name = 'draft';
  private readonly session: Session;
  private readonly sampler: Sampler;

  constructor(draft: DraftModel, target: Session, sampling: SamplerOptions, maxDraft: number) {
    const d = draft.engine;
    if (!d || typeof d.forward !== 'function') throw new LutraError('speculative.draft: expected a loaded lutra model (loadModel())');
    if (d.vocabSize !== target.vocabSize) {
      throw new LutraError(
        `speculative.draft: the draft model's vocabulary has ${d.vocabSize} tokens, the model's ${target.vocabSize}: a draft model must share the tokenizer`,
      );
    }
    const contextLength = Math.min(target.contextLength, d.cfg.maxPositions);
    this.session = new Session(d, { contextLength, prefillBatch: target.prefillBatch, rollbackSlack: maxDraft + 1, kvType: target.cache.type });
    // Its own stream of random numbers (the target's decides acceptance).
    this.sampler = new Sampler({ ...sampling, seed: ((sampling.seed ?? 0) ^ 0x5bd1e995) >>> 0 });
  }

  propose(history: readonly number[], k: number): DraftProposal {
    const s = this.session;
    const room = s.contextLength - history.length;
    k = Math.min(k, room);
    if (k <= 0) return { ids: [], q: [] };
    // Keep the cached prefix (all but the last id, whose logits are needed) and feed the rest.
    const common = Math.min(s.commonPrefix(history), history.length - 1);
    if (!s.truncate(common)) s.reset();
    let logits = s.prefill(history.slice(s.position));
    const seq = history.slice() as number[];
    const ids: number[] = [];
    const q: TokenDistribution[] = [];
    for (let j = 0; j < k; j++) {
      const dist = this.sampler.distribution(logits, seq);
      const id = this.sampler.draw(dist);
      ids.push(id);
      q.push(dist);
      seq.push(id);
      if (j + 1 < k) logits = s.step(id);
    }
    return { ids, q };
  }

  close(): void {
    this.session.dispose();
  }
}
