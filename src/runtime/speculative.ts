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
import { decodeStep } from './batcher.js';
import { yieldToEventLoop } from '../util/yield.js';

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
 * Draft length and on/off from measured costs: a verify pass of k drafts costs about
 * 1 + β·k one-token steps (β timed from the passes against plain steps; it includes drafting) and
 * yields (1 − a^(k+1)) / (1 − a) tokens at per-token acceptance a. The controller drafts the k that
 * maximises tokens per step-cost, and switches drafting off when even that is under 1 (it would be
 * slower than plain steps), trying again after a cool-down that doubles while it keeps not paying.
 */
interface ControllerState {
  msStep: number;
  steps: number;
  beta: number;
  passes: number;
  drafted: number;
  accepted: number;
  cooldown: number;
}

/** Controller states by loaded model and draft source: later generations start from what earlier ones measured. */
const learnt = new WeakMap<object, Map<string, ControllerState>>();

const engineIds = new WeakMap<object, number>();
let engineCount = 0;
const engineId = (engine: object): number => {
  if (!engineIds.has(engine)) engineIds.set(engine, ++engineCount);
  return engineIds.get(engine)!;
};

export class DraftController {
  private msStep = 0;
  private steps = 0;
  private beta = 0;
  private passes = 0;
  private drafted = 0;
  private accepted = 0;
  private offUntil = 0;
  private cooldown = 16;
  /** Passes remaining in the current trial after a cool-down. */
  private probing = 0;
  static readonly PROBE = 3;

  constructor(readonly maxDraft: number, readonly initial: number, readonly adaptive: boolean) {}

  /** Per-token acceptance, from the passes so far (a prior of 0.5 weighted as 4 drafts). */
  private get acceptance(): number {
    return (this.accepted + 2) / (this.drafted + 4);
  }

  /** Tokens per step-cost of a pass drafting k. */
  private value(k: number): number {
    const a = Math.min(this.acceptance, 0.999);
    return (1 - a ** (k + 1)) / (1 - a) / (1 + this.beta * k);
  }

  /** Draft length for the next pass (0: take a plain step). `produced` counts tokens so far. */
  length(produced: number): number {
    if (!this.adaptive) return this.maxDraft;
    if (this.steps < 2) return 0; // time a couple of plain steps first: the yardstick
    if (produced < this.offUntil) return 0;
    if (this.passes < 2 || this.probing > 0) return Math.min(this.initial, this.maxDraft);
    let best = 1;
    for (let k = 2; k <= this.maxDraft; k++) if (this.value(k) > this.value(best)) best = k;
    if (this.value(best) < 1) {
      this.switchOff(produced);
      return 0;
    }
    return best;
  }

  private switchOff(produced: number): void {
    this.offUntil = produced + this.cooldown;
    this.cooldown = Math.min(512, this.cooldown * 2);
    this.probing = DraftController.PROBE;
  }

  /** What was learnt, to start the next generation of the same model and source from. */
  snapshot(): ControllerState {
    return { msStep: this.msStep, steps: this.steps, beta: this.beta, passes: this.passes, drafted: this.drafted, accepted: this.accepted, cooldown: this.cooldown };
  }

  restore(st: ControllerState): void {
    Object.assign(this, st);
  }

  plainStep(ms: number): void {
    this.msStep = this.steps === 0 ? ms : 0.8 * this.msStep + 0.2 * ms;
    this.steps++;
  }

  pass(ms: number, drafted: number, accepted: number, produced: number): void {
    if (!this.adaptive) return;
    const b = Math.max(0, (ms / this.msStep - 1) / drafted);
    this.beta = this.passes === 0 ? b : 0.7 * this.beta + 0.3 * b;
    this.passes++;
    // Recent passes count most: old counts decay.
    this.drafted = 0.9 * this.drafted + drafted;
    this.accepted = 0.9 * this.accepted + accepted;
    if (this.probing > 0 && --this.probing > 0) return;
    if (this.passes < 2) return;
    let best = 0;
    for (let k = 1; k <= this.maxDraft; k++) best = Math.max(best, this.value(k));
    if (best < 1) this.switchOff(produced);
    else if (this.probing === 0) {
      this.cooldown = 16;
    }
  }

  isOff(produced: number): boolean {
    return this.adaptive && this.steps >= 2 && produced < this.offUntil;
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
  private learntKey = '';
  private learn = false;

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
    this.learntKey = src === 'draft' ? `draft ${engineId(config.draft!.engine)}:${maxDraft}` : `${this.source.name}:${maxDraft}`;
    this.learn = typeof src === 'string';
    const prior = learnt.get(session.model)?.get(this.learntKey);
    if (prior && this.learn) this.control.restore(prior);
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
  async next(history: number[], budget: number): Promise<number[]> {
    const s = this.session;
    const room = s.contextLength - history.length; // drafts that fit after the fed token
    const k = this.control ? Math.min(this.control.length(this.produced), budget - 1, room) : 0;
    const t0 = performance.now();
    let out: number[];
    const proposal = k > 0 ? this.source!.propose(history, k) : null;
    if (!proposal || proposal.ids.length === 0) {
      // A plain step goes through the model's batcher (other sessions' steps share the pass).
      const logits = await decodeStep(s, history[history.length - 1]);
      out = [this.sampler.sample(logits, history)];
      this.control?.plainStep(performance.now() - t0);
      if (this.stats && this.control!.isOff(this.produced)) this.stats.offTokens++;
    } else {
      out = this.verify(history, proposal.ids.slice(0, k), proposal.q.slice(0, k), t0);
      await yieldToEventLoop();
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
    if (this.control?.adaptive && this.learn) {
      let byModel = learnt.get(s.model);
      if (!byModel) learnt.set(s.model, (byModel = new Map()));
      byModel.set(this.learntKey, this.control.snapshot());
    }
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
