// Token sampling: greedy, or temperature with top-k, top-p, min-p and a repetition penalty,
// driven by a seeded PRNG so a given seed always gives the same tokens.
import { LutraError } from '../util/errors.js';

export interface SamplerOptions {
  /** 0 = greedy. */
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  /** > 1 discourages tokens already seen (HF/llama.cpp convention: divide positive logits, multiply negative). */
  repetitionPenalty?: number;
  seed?: number;
  /** Ids at or above this are never sampled (placeholder/padding rows of 262 208-row embeddings). */
  maxTokenId?: number;
}

/** splitmix32: small, fast, good enough for sampling, fully determined by the seed. */
export function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    z = (z ^ (z >>> 16)) >>> 0;
    return z / 4294967296;
  };
}

export class Sampler {
  readonly temperature: number;
  readonly topK: number;
  readonly topP: number;
  readonly minP: number;
  readonly repetitionPenalty: number;
  readonly maxTokenId: number;
  private rand: () => number;

  constructor(opts: SamplerOptions = {}) {
    this.temperature = opts.temperature ?? 0;
    this.topK = opts.topK ?? 0;
    this.topP = opts.topP ?? 1;
    this.minP = opts.minP ?? 0;
    this.repetitionPenalty = opts.repetitionPenalty ?? 1;
    this.maxTokenId = opts.maxTokenId ?? 262144;
    this.rand = prng(opts.seed ?? 0);

    // Messages name the option (the CLI checks its flags before it gets here).
    const bad = (option: string, v: number, ok: boolean, expected: string) => {
      if (typeof v !== 'number') throw new LutraError(`${option} ${JSON.stringify(v)}: not a number; expected ${expected}`);
      if (!ok || !Number.isFinite(v)) throw new LutraError(`${option} ${JSON.stringify(v)} is out of range: expected ${expected}`);
    };
    bad('temperature', this.temperature, this.temperature >= 0, 'a number ≥ 0');
    bad('topK', this.topK, Number.isInteger(this.topK) && this.topK >= 0, 'an integer ≥ 0');
    bad('topP', this.topP, this.topP > 0 && this.topP <= 1, 'a number in (0, 1]');
    bad('minP', this.minP, this.minP >= 0 && this.minP < 1, 'a number in [0, 1)');
    bad('repetitionPenalty', this.repetitionPenalty, this.repetitionPenalty > 0, 'a number > 0');
    const seed = opts.seed ?? 0;
    bad('seed', seed, Number.isInteger(seed) && seed >= 0, 'an integer ≥ 0');
  }

  /** Pick the next token from logits [vocab]; `history` feeds the repetition penalty. */
  sample(logits: Float32Array, history: ArrayLike<number> = []): number {
    const n = Math.min(logits.length, this.maxTokenId);
    if (this.temperature === 0 && this.repetitionPenalty === 1) return argmaxOf(logits, n); // no copy: one per token per stream adds up
    return this.draw(this.distribution(logits, history));
  }

  /**
   * The distribution sample() draws from, after every transform (repetition penalty, temperature,
   * top-k, min-p, top-p): candidate ids with weights summing to `total`. Greedy is a point mass
   * on the best id. Speculative decoding compares these for the target and the draft.
   */
  distribution(logits: Float32Array, history: ArrayLike<number> = []): TokenDistribution {
    const n = Math.min(logits.length, this.maxTokenId);
    // Plain greedy needs no copy (a speculative verify pass asks once per row: at a 262k vocabulary
    // a 2 MB copy per row cost more than the forward pass of a small model's drafts).
    if (this.temperature === 0 && this.repetitionPenalty === 1) return { ids: [argmaxOf(logits, n)], weights: [1], total: 1 };
    // set(), not Float64Array.from(): from() walks the iterator, ~1 ms per 262k-entry row.
    const l = new Float64Array(n);
    l.set(logits.subarray(0, n));
    if (this.repetitionPenalty !== 1) {
      const seen = new Set<number>();
      for (let i = 0; i < history.length; i++) if (history[i] < n) seen.add(history[i]);
      for (const id of seen) l[id] = l[id] > 0 ? l[id] / this.repetitionPenalty : l[id] * this.repetitionPenalty;
    }
    if (this.temperature === 0) {
      let best = 0;
      for (let i = 1; i < n; i++) if (l[i] > l[best]) best = i;
      return { ids: [best], weights: [1], total: 1 };
    }
    // Candidates sorted by logit (ties by id, so the order is deterministic).
    // Tokens more than 40·T below the best have probability < e^-40 relative: drop them before sorting.
    let top = -Infinity;
    for (let i = 0; i < n; i++) if (l[i] > top) top = l[i];
    const cut = top - 40 * this.temperature;
    let cand: number[] = [];
    for (let i = 0; i < n; i++) if (l[i] >= cut) cand.push(i);
    const k = this.topK > 0 ? Math.min(this.topK, cand.length) : cand.length;
    cand.sort((a, b) => l[b] - l[a] || a - b);
    cand = cand.slice(0, k);
    const max = l[cand[0]];
    let probs = cand.map((id) => Math.exp((l[id] - max) / this.temperature));
    let sum = probs.reduce((a, b) => a + b, 0);
    probs = probs.map((p) => p / sum);
    let keep = probs.length;
    if (this.minP > 0) {
      const floor = this.minP * probs[0];
      keep = Math.max(1, probs.findIndex((p) => p < floor) === -1 ? keep : probs.findIndex((p) => p < floor));
    }
    if (this.topP < 1) {
      let acc = 0;
      for (let i = 0; i < keep; i++) {
        acc += probs[i];
        if (acc >= this.topP) {
          keep = i + 1;
          break;
        }
      }
    }
    probs = probs.slice(0, keep);
    sum = probs.reduce((a, b) => a + b, 0);
    return { ids: cand.slice(0, keep), weights: probs, total: sum };
  }

  /** One id drawn from a distribution (one number of the seeded stream; none for a point mass). */
  draw(d: TokenDistribution): number {
    if (d.ids.length === 1 && this.temperature === 0) return d.ids[0];
    let r = this.rand() * d.total;
    for (let i = 0; i < d.ids.length; i++) {
      r -= d.weights[i];
      if (r < 0) return d.ids[i];
    }
    return d.ids[d.ids.length - 1];
  }

  /** A uniform number in [0, 1) from the sampler's seeded stream. */
  uniform(): number {
    return this.rand();
  }
}

/** A sampling distribution: `weights[i]` of `ids[i]`, summing to `total` (not necessarily 1). */
export interface TokenDistribution {
  ids: number[];
  weights: number[];
  total: number;
}

/** The probability of `id` under `d` (0 outside its support). */
export function probabilityOf(d: TokenDistribution, id: number): number {
  const i = d.ids.indexOf(id);
  return i < 0 ? 0 : d.weights[i] / d.total;
}

/** Index of the largest of x[0..n) (the first on ties). */
function argmaxOf(x: Float32Array, n: number): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (x[i] > x[best]) best = i;
  return best;
}
