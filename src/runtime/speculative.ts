// Speculative decoding: a draft source guesses the next k tokens; one forward pass of the target
// over the last token plus the guesses gives the target's distribution at every one of them; the
// longest prefix the target agrees with is kept and the rest of the KV cache rolled back. With
// greedy sampling that is plain greedy decoding, token for token; with temperature, drafts are
// accepted by the speculative-sampling rule (accept x with probability min(1, p(x)/q(x)), else
// draw from norm(max(0, p − q))), which leaves the output distributed exactly as the target's.
import type { Session } from './session.js';
import { probabilityOf, type Sampler, type SamplerOptions, type TokenDistribution } from './sampler.js';
import { LookupDraft, ModelDraft, SuffixDraft, suffixIndexFor, type DraftModel, type DraftSource } from './drafts.js';
import { LutraError } from '../util/errors.js';

export type { DraftSource, DraftModel };

export interface SpeculativeConfig {
  /** Where drafts come from: prompt lookup, suffix decoding over earlier outputs, a draft model, or a custom source. */
  source: 'lookup' | 'suffix' | 'draft' | DraftSource;
  /** With source 'draft': the draft model (a loaded lutra model sharing the tokenizer). */
  draft?: DraftModel;
  /** Longest draft (default 8; 6 with a draft model). */
  maxDraft?: number;
  /** First draft length (default 4). */
  initialDraft?: number;
  /** Prompt lookup: the longest n-gram matched (default 3); suffix: the shortest context followed (default 2). */
  ngram?: number;
  /** Adapt the draft length to the acceptance rate and stop drafting when it does not pay (default true); false drafts maxDraft every time. */
  adaptive?: boolean;
}

/** The `speculative` generation option: a source name, `{ draft: model }`, or a full configuration. */
export type SpeculativeOption = 'off' | 'lookup' | 'suffix' | { draft: DraftModel } | SpeculativeConfig;

export interface SpeculativeStats {
  /** 'lookup', 'suffix', 'draft' or a custom source's name. */
  source: string;
  /** Draft tokens proposed and checked. */
  drafted: number;
  /** Draft tokens the target kept. */
  accepted: number;
  /** accepted / drafted (0 with nothing drafted). */
  acceptanceRate: number;
  /** Forward passes of the target during decode (verify passes and plain steps). */
  passes: number;
  /** Of those, passes that checked at least one draft token. */
  verifyPasses: number;
  /** Tokens produced per target forward pass during decode (1 for plain decoding). */
  tokensPerPass: number;
  /** Tokens decoded while drafting was switched off because it did not pay. */
  offTokens: number;
}

/** Validate the option; null when speculative decoding is off. */
export function parseSpeculative(opt: unknown): SpeculativeConfig | null {
  if (opt === undefined || opt === null || opt === 'off' || opt === false) return null;
  if (opt === 'lookup' || opt === 'suffix') return { source: opt };
  if (typeof opt === 'object' && !Array.isArray(opt)) {
    const o = opt as Record<string, unknown>;
    if (o.source === undefined && o.draft !== undefined) return parseSpeculative({ ...o, source: 'draft' });
    const src = o.source;
    const custom = typeof src === 'object' && src !== null && typeof (src as DraftSource).propose === 'function';
    if (src !== 'lookup' && src !== 'suffix' && src !== 'draft' && !custom) {
      throw new LutraError(`speculative.source ${JSON.stringify(src)}: expected "lookup", "suffix", "draft" or a draft source`);
    }
    if (src === 'draft' && (typeof o.draft !== 'object' || o.draft === null)) throw new LutraError('speculative.draft: expected a loaded lutra model');
    const int = (key: string, min: number, max: number) => {
      const v = o[key];
      if (v !== undefined && (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)) {
        throw new LutraError(`speculative.${key} ${JSON.stringify(v)}: expected an integer in [${min}, ${max}]`);
      }
    };
    int('maxDraft', 1, 32);
    int('initialDraft', 1, 32);
    int('ngram', 1, 8);
    if (o.adaptive !== undefined && typeof o.adaptive !== 'boolean') throw new LutraError('speculative.adaptive: expected a boolean');
    return o as unknown as SpeculativeConfig;
  }
  throw new LutraError(`speculative ${JSON.stringify(opt)}: expected "off", "lookup", "suffix" or { draft: model }`);
}

/** Decides whether p accepts draft token x drawn from q: u < p(x)/q(x) (u uniform in [0, 1)). */
export type AcceptRule = (px: number, qx: number, u: number) => boolean;
export const exactRule: AcceptRule = (px, qx, u) => u * qx < px;

/**
 * The verify step on distributions: `target(i)` is the target's distribution after the history
 * and drafts[0..i); returns the kept drafts plus one more token (the correction at the first
 * rejection, or a token after the last draft). `q[i]` null means drafts[i] was certain (a point
 * mass). With a greedy sampler a draft is kept iff it is the target's choice.
 */
export function acceptDrafts(
  target: (i: number) => TokenDistribution,
  drafts: readonly number[],
  q: readonly (TokenDistribution | null)[],
  sampler: Sampler,
  rule: AcceptRule = exactRule,
): { tokens: number[]; accepted: number } {
  const tokens: number[] = [];
  for (let i = 0; i < drafts.length; i++) {
    const p = target(i);
    const x = drafts[i];
    if (sampler.temperature === 0) {
      if (p.ids[0] !== x) return { tokens: [...tokens, p.ids[0]], accepted: i };
      tokens.push(x);
      continue;
    }
    const px = probabilityOf(p, x);
    const qx = q[i] ? probabilityOf(q[i]!, x) : 1;
    if (qx > 0 && rule(px, qx, sampler.uniform())) {
      tokens.push(x);
      continue;
    }
    tokens.push(sampler.draw(residual(p, q[i], x)));
    return { tokens, accepted: i };
  }
  tokens.push(sampler.draw(target(drafts.length)));
  return { tokens, accepted: drafts.length };
}

/** norm(max(0, p − q)); q null is a point mass on x. Falls back to p when nothing is left (p = q). */
export function residual(p: TokenDistribution, q: TokenDistribution | null, x: number): TokenDistribution {
  const qOf = new Map<number, number>();
  if (q) q.ids.forEach((id, i) => qOf.set(id, q.weights[i] / q.total));
  else qOf.set(x, 1);
  const ids: number[] = [];
  const weights: number[] = [];
  let total = 0;
  p.ids.forEach((id, i) => {
    const w = p.weights[i] / p.total - (qOf.get(id) ?? 0);
    if (w > 0) {
      ids.push(id);
      weights.push(w);
      total += w;
    }
  });
  return total > 0 ? { ids, weights, total } : p;
}

/**
 * Draft length and on/off from what the passes measure: the length grows after a fully accepted
 * draft and shrinks to just past the accepted part after a rejection; drafting switches off when
 * a window of passes produced tokens slower than plain steps do (or kept under 10 % of the
 * drafts), and is tried again after a cool-down that doubles while it keeps not paying.
 */
export class DraftController {
  k: number;
  private window: { ms: number; tokens: number; drafted: number; accepted: number }[] = [];
  private msPlain = 0;
  private plainSamples = 0;
  private offUntil = 0;
  private cooldown = 16;
  static readonly WINDOW = 8;
  static readonly MIN_ACCEPTANCE = 0.1;

  constructor(readonly maxDraft: number, initial: number, readonly adaptive: boolean) {
    this.k = adaptive ? Math.min(initial, maxDraft) : maxDraft;
  }

  /** Draft length for the next pass (0: take a plain step). `produced` counts tokens so far. */
  length(produced: number): number {
    if (!this.adaptive) return this.maxDraft;
    if (this.plainSamples < 2) return 0; // time a couple of plain steps first: the yardstick
    return produced < this.offUntil ? 0 : this.k;
  }

  plainStep(ms: number): void {
    this.msPlain = this.plainSamples === 0 ? ms : 0.8 * this.msPlain + 0.2 * ms;
    this.plainSamples++;
  }

  pass(ms: number, drafted: number, accepted: number, produced: number): void {
    if (!this.adaptive) return;
    this.k = accepted === drafted ? Math.min(this.maxDraft, this.k + 1) : Math.max(1, Math.min(this.k - 1, accepted + 1));
    this.window.push({ ms, tokens: accepted + 1, drafted, accepted });
    if (this.window.length < DraftController.WINDOW) return;
    if (this.window.length > DraftController.WINDOW) this.window.shift();
    const sum = (f: (w: (typeof this.window)[number]) => number) => this.window.reduce((a, w) => a + f(w), 0);
    const msPerToken = sum((w) => w.ms) / sum((w) => w.tokens);
    const acceptance = sum((w) => w.accepted) / Math.max(1, sum((w) => w.drafted));
    if (msPerToken > this.msPlain || acceptance < DraftController.MIN_ACCEPTANCE) {
      this.offUntil = produced + this.cooldown;
      this.cooldown = Math.min(512, this.cooldown * 2);
      this.window = [];
    } else {
      this.cooldown = 16;
    }
  }

  isOff(produced: number): boolean {
    return this.adaptive && this.plainSamples >= 2 && produced < this.offUntil;
  }
}

/**
 * The decode side of generation: next() feeds the last sampled token (plus drafts) and returns the
 * token(s) that follow. The session always holds every token but the last one returned.
 */
export class Decoder {
  private readonly source: DraftSource | null;
  private readonly control: DraftController | null;
  readonly stats: SpeculativeStats | null;
  private produced = 0;
  private closed = false;

  constructor(
    private readonly session: Session,
    private readonly sampler: Sampler,
    config: SpeculativeConfig | null,
    sampling: SamplerOptions,
    promptIds: readonly number[],
  ) {
    if (!config) {
      this.source = null;
      this.control = null;
      this.stats = null;
      return;
    }
    // A rejected draft of k tokens rolls the cache back k tokens: the sliding rings need the slack.
    const rings = session.cache.layers.some((c) => c.ring);
    const room = rings ? session.cache.rollbackSlack : Infinity;
    const maxDraft = Math.min(config.maxDraft ?? (config.source === 'draft' ? 6 : 8), room);
    if (maxDraft < 1) throw new LutraError('speculative decoding needs a session created with rollbackSlack ≥ 2 (room to roll back rejected drafts)');
    const src = config.source;
    this.source =
      src === 'lookup' ? new LookupDraft(config.ngram ?? 3, 1)
      : src === 'suffix' ? new SuffixDraft(suffixIndexFor(session.model), config.ngram ?? 2, promptIds)
      : src === 'draft' ? new ModelDraft(config.draft as DraftModel, session, sampling, maxDraft)
      : src;
    this.control = new DraftController(maxDraft, config.initialDraft ?? 4, config.adaptive ?? true);
    this.stats = { source: this.source.name, drafted: 0, accepted: 0, acceptanceRate: 0, passes: 0, verifyPasses: 0, tokensPerPass: 0, offTokens: 0 };
  }

  /** The first token, from the prompt's last logits. */
  first(logits: Float32Array, history: readonly number[]): number {
    return this.sampler.sample(logits, history);
  }

  /**
   * Feed history's last token (and drafts) and return the next tokens: at most `budget` of them
   * (tokens still allowed); the context must have room for at least the one fed token.
   */
  next(history: number[], budget: number): number[] {
    const s = this.session;
    const room = s.contextLength - history.length; // drafts that fit after the fed token
    const k = this.control ? Math.min(this.control.length(this.produced), budget - 1, room) : 0;
    const t0 = performance.now();
    let out: number[];
    const proposal = k > 0 ? this.source!.propose(history, k) : null;
    if (!proposal || proposal.ids.length === 0) {
      const logits = s.step(history[history.length - 1]);
      out = [this.sampler.sample(logits, history)];
      this.control?.plainStep(performance.now() - t0);
      if (this.stats && this.control!.isOff(this.produced)) this.stats.offTokens++;
    } else {
      out = this.verify(history, proposal.ids.slice(0, k), proposal.q.slice(0, k), t0);
    }
    if (this.stats) this.stats.passes++;
    this.source?.observe?.(out);
    this.produced += out.length;
    return out;
  }

  private verify(history: number[], drafts: number[], q: (TokenDistribution | null)[], t0: number): number[] {
    const s = this.session;
    const base = s.position; // = history.length − 1
    const V = s.vocabSize;
    const rows = s.prefill([history[history.length - 1], ...drafts], { all: true });
    const seq = history.slice();
    const { tokens, accepted } = acceptDrafts(
      (i) => {
        seq.length = history.length + i;
        for (let j = 0; j < i; j++) seq[history.length + j] = drafts[j];
        return this.sampler.distribution(rows.subarray(i * V, (i + 1) * V), seq);
      },
      drafts,
      q,
      this.sampler,
    );
    // Keep the fed token and the accepted drafts; the correction is fed by the next pass.
    if (!s.truncate(base + 1 + accepted)) throw new Error(`speculative rollback to ${base + 1 + accepted} refused`);
    const st = this.stats!;
    st.drafted += drafts.length;
    st.accepted += accepted;
    st.verifyPasses++;
    this.control!.pass(performance.now() - t0, drafts.length, accepted, this.produced);
    return tokens;
  }

  /** Generation ended with `history`: drop tokens fed past its last-but-one, close the source, settle the counters. */
  finish(history: readonly number[]): SpeculativeStats | undefined {
    const s = this.session;
    if (this.stats && s.position > history.length - 1) s.truncate(history.length - 1);
    this.close();
    if (!this.stats) return undefined;
    const st = this.stats;
    st.acceptanceRate = st.drafted > 0 ? st.accepted / st.drafted : 0;
    st.tokensPerPass = st.passes > 0 ? this.produced / st.passes : 0;
    return { ...st };
  }

  /** Release the source (a draft model's session); safe to call more than once. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.source?.close?.();
  }
}
