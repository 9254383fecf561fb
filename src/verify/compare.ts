// The divergence harness behind `lutra compare`, engine-agnostic: two Runners (a candidate and a
// reference), one of which (the driver) generates greedily while the other is teacher-forced on
// the driver's tokens (the ANEMLL harness's semantics).
//
// For a prompt of P tokens and n generated tokens g0..g(n-1), both models see the same P+n-1
// tokens (prompt + g0..g(n-2); the last generated token is never fed). The logit row at position
// t predicts token t+1: positions 0..P-2 are the prompt phase (both models teacher-forced), and
// position P-1+k is decode step k (step 0 = the prediction after the last prompt token).
//
// Where the rows come from:
//  - lutra driver: its own decode path (prefill of the prompt with all logits, then one step()
//    per generated token): the logits a user of `lutra generate` gets. In this engine they equal
//    the batched-prefill logits to ~1e-4, and the teacher-forced side is one batched pass.
//  - lutra teacher-forced: batched prefill of the P+n-1 tokens with all logits, in chunks of the
//    session's prefill batch (so at most one chunk of [B, vocab] is alive at a time).
//  - llama.cpp (gguf:FILE) teacher-forced: one LlamaCppOracle.teacherForced call (a single
//    controlledEvaluate batch) returning log-probabilities, not logits.
//  - llama.cpp driver: greedy tokens from llama.cpp's own sampler (temperature 0), then its rows
//    from teacherForced over the same tokens; node-llama-cpp gives no cheap per-step full-vocab
//    logits during generation, and a batched pass is what the oracle measures elsewhere.
//
// Metrics (float64, full vocabulary, temperature 1), see stepMetrics().
import type { PreparedLora } from '../adapters/apply.js';
import type { Observer } from '../model/forward.js';
import type { ModelConfig } from '../arch/config-types.js';
import type { GemmaTokenizer } from '../tokenizer/tokenizer.js';
import { Session } from '../runtime/session.js';
import { loadModel, makeBackend } from '../runtime/load.js';
import { LlamaCppOracle, LOG_PROB_FLOOR } from './llama-cpp.js';
import { entropy, klDivergence, logSoftmax, pearson, top2 } from './metrics.js';
import { HiddenCapture, layerStats, type LayerStats } from './hidden.js';
import { LutraError } from '../util/errors.js';
import type { CausalLM } from '../model/forward.js';
import type { Numerics } from '../fp16/numerics.js';
import type { KvType } from '../backend/backend.js';
import { describeOverflow, type OnOverflow } from '../fp16/overflow.js';

export { HiddenCapture, layerStats, type LayerStats };

// ---------------------------------------------------------------------------------------------
// Runners

export interface RunOptions {
  /** Stop generating after one of these ids (it is kept as the last step). */
  stopIds?: ReadonlySet<number>;
  hidden?: HiddenCapture;
  /** Called after each generated token. */
  onStep?: (done: number) => void;
}

export interface Runner {
  /** As given on the command line (a folder or gguf:FILE). */
  readonly spec: string;
  readonly engine: 'lutra' | 'llama.cpp';
  /** e.g. "lutra, reference backend" or "llama.cpp (CPU, KV f32)". */
  readonly description: string;
  readonly vocabSize: number;
  /** True when rows are log-probabilities (llama.cpp), false for raw logits. */
  readonly rowsAreLogProbs: boolean;
  readonly tokenizer: GemmaTokenizer | null;
  /** The architecture, when the runner can report hidden states (lutra only). */
  readonly config: ModelConfig | null;
  readonly loadSeconds: number;
  /**
   * Greedy generation of up to maxTokens ids after `prompt`. Returns the ids and the rows of every
   * fed position 0..P+n-2 (row P-1+k is step k's distribution).
   */
  generate(prompt: number[], maxTokens: number, opts: RunOptions): Promise<{ tokens: number[]; rows: Float32Array[] }>;
  /** Teacher-forced over `ids`; onRow(t, row) for t = 0..ids.length-1, in order; the row is only valid during the call. */
  teacherForce(ids: number[], onRow: (pos: number, row: Float32Array) => void, opts: { hidden?: HiddenCapture }): Promise<void>;
  /** Only the hidden states over `ids` (no logit rows): runners that expose hidden states (lutra). */
  captureHidden?(ids: number[], hidden: HiddenCapture): Promise<void>;
  dispose(): Promise<void>;
}

export interface LutraRunnerOptions {
  prefillBatch?: number;
  /** Default: what the model records (a package's meta.yaml), else f32. */
  numerics?: Numerics;
  onOverflow?: OnOverflow;
  /** Inputs of int8/int4/LUT matmuls (backend default: q8). */
  activations?: 'q8' | 'f32';
  /** Threads of a wasm backend (default: available cores). */
  threads?: number;
  /** LoRA adapters applied unmerged (folder, weight). */
  lora?: readonly { dir: string; weight: number }[];
  /** KV cache type (default f32). */
  kvType?: KvType;
}

export class LutraRunner implements Runner {
  readonly engine = 'lutra' as const;
  readonly rowsAreLogProbs = false;
  readonly description: string;
  constructor(
    readonly spec: string,
    readonly model: CausalLM,
    readonly tokenizer: GemmaTokenizer | null,
    readonly loadSeconds: number,
    private readonly prefillBatch = 64,
    private readonly onOverflow: OnOverflow = 'error',
    readonly lora: PreparedLora | null = null,
    readonly kvType: KvType = 'f32',
  ) {
    this.description = `lutra, ${model.backend.name} backend${kvType !== 'f32' ? `, ${kvType} KV cache` : ''}${lora ? `, LoRA ${lora.label}` : ''}`;
  }

  /** fp16 overflows met with onOverflow 'continue', one line each (the first of each session). */
  readonly overflows: string[] = [];

  static open(dir: string, backend: string, opts: LutraRunnerOptions = {}): LutraRunner {
    const b = makeBackend(backend, { activations: opts.activations, threads: opts.threads });
    const { model, tokenizer, loadSeconds, lora } = loadModel(dir, b, { numerics: opts.numerics, lora: opts.lora });
    return new LutraRunner(dir, model, tokenizer, loadSeconds, opts.prefillBatch, opts.onOverflow, lora, opts.kvType);
  }

  get vocabSize(): number {
    return this.model.vocabSize;
  }

  get config(): ModelConfig {
    return this.model.cfg;
  }

  private session(n: number): Session {
    const max = this.model.cfg.maxPositions;
    if (n > max) throw new LutraError(`${this.spec}: ${n} tokens exceed max_position_embeddings ${max}; shorten the prompt or --max-tokens`);
    return new Session(this.model, { contextLength: Math.max(1, n), prefillBatch: this.prefillBatch, onOverflow: this.onOverflow, lora: this.lora, kvType: this.kvType });
  }

  private noteOverflow(s: Session): void {
    if (s.overflow) this.overflows.push(describeOverflow(s.overflow));
  }

  /** Batched prefill with every position's logits, one prefill batch at a time. */
  private prefillRows(s: Session, ids: number[], onRow: (pos: number, row: Float32Array) => void, observer?: Observer): void {
    const V = this.vocabSize;
    const B = this.prefillBatch;
    for (let s0 = 0; s0 < ids.length; s0 += B) {
      const chunk = ids.slice(s0, s0 + B);
      const block = s.prefill(chunk, { all: true, observer });
      for (let r = 0; r < chunk.length; r++) onRow(s0 + r, block.subarray(r * V, (r + 1) * V));
    }
  }

  async generate(prompt: number[], maxTokens: number, opts: RunOptions) {
    const s = this.session(prompt.length + maxTokens - 1);
    const observer = opts.hidden?.observer;
    const rows: Float32Array[] = [];
    this.prefillRows(s, prompt, (_, row) => rows.push(row), observer);
    const tokens: number[] = [];
    for (;;) {
      const tok = top2(rows[rows.length - 1]).top;
      tokens.push(tok);
      opts.onStep?.(tokens.length);
      if (tokens.length >= maxTokens || opts.stopIds?.has(tok)) break;
      rows.push(s.step(tok, observer));
      if (tokens.length % 8 === 0) await new Promise((r) => setImmediate(r));
    }
    this.noteOverflow(s);
    return { tokens, rows };
  }

  async teacherForce(ids: number[], onRow: (pos: number, row: Float32Array) => void, opts: { hidden?: HiddenCapture }) {
    const s = this.session(ids.length);
    this.prefillRows(s, ids, onRow, opts.hidden?.observer);
    this.noteOverflow(s);
  }

  async captureHidden(ids: number[], hidden: HiddenCapture) {
    const s = this.session(ids.length);
    // The LM head runs for the last position of each batch only.
    for (let s0 = 0; s0 < ids.length; s0 += this.prefillBatch) s.prefill(ids.slice(s0, s0 + this.prefillBatch), { observer: hidden.observer });
    this.noteOverflow(s);
  }

  async dispose(): Promise<void> {}
}

export class LlamaCppRunner implements Runner {
  readonly engine = 'llama.cpp' as const;
  readonly rowsAreLogProbs = true;
  readonly tokenizer = null;
  readonly config = null;
  readonly description = 'llama.cpp (node-llama-cpp, CPU, KV cache f32)';
  private constructor(readonly spec: string, private oracle: LlamaCppOracle, readonly loadSeconds: number) {}

  static async open(spec: string, path: string, contextSize: number, threads: number): Promise<LlamaCppRunner> {
    const t0 = performance.now();
    const oracle = await LlamaCppOracle.load(path, { contextSize, threads });
    return new LlamaCppRunner(spec, oracle, (performance.now() - t0) / 1000);
  }

  get vocabSize(): number {
    return this.oracle.vocabSize;
  }

  async generate(prompt: number[], maxTokens: number, opts: RunOptions) {
    const tokens = await this.oracle.greedy(prompt, maxTokens, opts.stopIds);
    opts.onStep?.(tokens.length);
    const rows = await this.oracle.teacherForced([...prompt, ...tokens.slice(0, -1)]);
    return { tokens, rows };
  }

  async teacherForce(ids: number[], onRow: (pos: number, row: Float32Array) => void) {
    const rows = await this.oracle.teacherForced(ids);
    rows.forEach((row, t) => onRow(t, row));
  }

  async dispose(): Promise<void> {
    await this.oracle.dispose();
  }
}

/** `gguf:FILE` → a llama.cpp runner; anything else is a lutra model folder. */
export function parseRunnerSpec(spec: string): { engine: 'lutra' | 'llama.cpp'; path: string } {
  if (spec.startsWith('gguf:')) {
    const path = spec.slice(5);
    if (path === '') throw new LutraError(`"${spec}": expected gguf:FILE`);
    return { engine: 'llama.cpp', path };
  }
  return { engine: 'lutra', path: spec };
}

// ---------------------------------------------------------------------------------------------
// Metrics

export interface StepMetrics {
  kl: number;
  /** NaN when either vector is constant. */
  corr: number;
  entropy: number;
  match: boolean;
  margin: number;
  refTop: number;
  candTop: number;
}

function clampLogProbs(lp: Float64Array): Float64Array {
  for (let i = 0; i < lp.length; i++) if (lp[i] < LOG_PROB_FLOOR) lp[i] = LOG_PROB_FLOOR;
  return lp;
}

/**
 * One step, float64 over the full vocabulary, temperature 1:
 *  - kl: KL(P_ref ‖ P_cand) in nats, Σ p_ref (log p_ref − log p_cand), from log-softmax in f64;
 *  - corr: Pearson correlation of the raw logit vectors; when either side gives log-probabilities
 *    (llama.cpp), of both sides' log-probabilities clamped below at LOG_PROB_FLOOR = log(1e-45)
 *    (Pearson is shift-invariant, so unclamped log-probs correlate exactly like logits);
 *  - entropy: of the candidate's distribution, nats;
 *  - match: argmax(ref) == argmax(cand); margin: the reference's top-1 minus top-2 logit (the same
 *    in log-probs).
 */
export function stepMetrics(ref: ArrayLike<number>, cand: ArrayLike<number>, corrOnLogProbs: boolean): StepMetrics {
  const lr = logSoftmax(ref);
  const lc = logSoftmax(cand);
  const kl = klDivergence(lr, lc);
  const h = entropy(lc);
  const corr = corrOnLogProbs ? pearson(clampLogProbs(lr), clampLogProbs(lc)) : pearson(ref, cand);
  const rt = top2(ref);
  const ct = top2(cand);
  return { kl, corr, entropy: h, match: rt.top === ct.top, margin: rt.margin, refTop: rt.top, candTop: ct.top };
}

/** ANEMLL's richer harness's repetition flags, on the driver's generated tokens. */
export interface RepetitionFlags {
  /** The same token 10 times in a row: the step where the run starts, or null. */
  stuck_token: { step: number; token: number } | null;
  /** A phrase of 8–64 tokens repeated 3 times back to back: where it starts and its length, or null. */
  phrase_repeat: { step: number; length: number } | null;
}

export function repetitionFlags(tokens: number[]): RepetitionFlags {
  let stuck: RepetitionFlags['stuck_token'] = null;
  for (let i = 0, run = 0; i < tokens.length; i++) {
    run = i > 0 && tokens[i] === tokens[i - 1] ? run + 1 : 1;
    if (run === 10) {
      stuck = { step: i - 9, token: tokens[i] };
      break;
    }
  }
  // The earliest-ending triple repeat, shortest phrase first at equal ends.
  let phrase: RepetitionFlags['phrase_repeat'] = null;
  let bestEnd = Infinity;
  for (let L = 8; L <= 64 && 3 * L <= tokens.length; L++) {
    for (let s = 0; s + 3 * L <= tokens.length && s + 3 * L < bestEnd; s++) {
      let ok = true;
      for (let j = 0; j < 2 * L && ok; j++) ok = tokens[s + j] === tokens[s + L + j];
      if (ok) {
        bestEnd = s + 3 * L;
        phrase = { step: s, length: L };
        break;
      }
    }
  }
  return { stuck_token: stuck, phrase_repeat: phrase };
}

// ---------------------------------------------------------------------------------------------
// One prompt

export type DriverRole = 'candidate' | 'reference';

export interface PromptRun {
  promptIds: number[];
  /** Generated ids (the driver's greedy tokens). */
  tokens: number[];
  steps: StepMetrics[];
  /** KL(ref ‖ cand) at each prompt position 0..P-2 (predictions of prompt tokens 1..P-1). */
  promptKl: number[];
  layers: LayerStats | null;
  seconds: { driver: number; teacher: number; metrics: number };
}

export interface CompareOptions {
  maxTokens: number;
  driver: DriverRole;
  stopIds?: ReadonlySet<number>;
  /** Cosine threshold per layer; null to skip hidden states. */
  layerThreshold: number | null;
  onStep?: (done: number) => void;
}

export async function comparePrompt(candidate: Runner, reference: Runner, promptIds: number[], opts: CompareOptions): Promise<PromptRun> {
  const P = promptIds.length;
  if (P === 0) throw new LutraError('empty prompt: no tokens to compare');
  const V = candidate.vocabSize;
  for (const [i, t] of promptIds.entries()) {
    if (!Number.isInteger(t) || t < 0 || t >= V) throw new LutraError(`prompt token ${t} at position ${i} is outside the vocabulary (0..${V - 1})`);
  }
  const [driver, teacher] = opts.driver === 'candidate' ? [candidate, reference] : [reference, candidate];
  const maxFed = P + opts.maxTokens - 1;
  let hidD: HiddenCapture | undefined;
  let hidT: HiddenCapture | undefined;
  if (opts.layerThreshold !== null) {
    const cfg = driver.config!;
    hidD = new HiddenCapture(cfg.numLayers, cfg.hiddenSize, maxFed);
    hidT = new HiddenCapture(cfg.numLayers, cfg.hiddenSize, maxFed);
  }

  let t0 = performance.now();
  const { tokens, rows } = await driver.generate(promptIds, opts.maxTokens, { stopIds: opts.stopIds, hidden: hidD, onStep: opts.onStep });
  const fed = [...promptIds, ...tokens.slice(0, -1)];
  if (rows.length !== fed.length) throw new Error(`internal: driver returned ${rows.length} rows for ${fed.length} fed tokens`);
  const tDriver = (performance.now() - t0) / 1000;

  const corrOnLogProbs = candidate.rowsAreLogProbs || reference.rowsAreLogProbs;
  const steps: StepMetrics[] = [];
  const promptKl: number[] = [];
  let tMetrics = 0;
  t0 = performance.now();
  await teacher.teacherForce(
    fed,
    (pos, row) => {
      const m0 = performance.now();
      const d = rows[pos];
      const [ref, cand] = opts.driver === 'candidate' ? [row, d] : [d, row];
      if (pos < P - 1) {
        promptKl.push(klDivergence(logSoftmax(ref), logSoftmax(cand)));
      } else {
        steps.push(stepMetrics(ref, cand, corrOnLogProbs));
      }
      (rows as (Float32Array | null)[])[pos] = null; // let the driver's rows go as we pass them
      tMetrics += performance.now() - m0;
    },
    { hidden: hidT },
  );
  const tTeacher = (performance.now() - t0) / 1000 - tMetrics / 1000;
  if (steps.length !== tokens.length) throw new Error(`internal: ${steps.length} steps for ${tokens.length} tokens`);
  // The driver follows its own argmax, so its top-1 is the token it fed (llama.cpp's sampler and
  // its batched pass may disagree on exact ties; that is not counted against either model).
  let layers: LayerStats | null = null;
  if (hidD && hidT) {
    const m0 = performance.now();
    const [hc, hr] = opts.driver === 'candidate' ? [hidD, hidT] : [hidT, hidD];
    if (hc.captured !== fed.length || hr.captured !== fed.length) throw new Error(`internal: captured ${hc.captured}/${hr.captured} positions of ${fed.length}`);
    tMetrics += performance.now() - m0;
    // Single-layer: the candidate again, its stream replaced by the reference's after every layer.
    let single: HiddenCapture | undefined;
    if (candidate.captureHidden) {
      single = new HiddenCapture(hc.numLayers, hc.hidden, fed.length, hr);
      await candidate.captureHidden(fed, single);
      if (single.captured !== fed.length) throw new Error(`internal: captured ${single.captured} single-layer positions of ${fed.length}`);
    }
    const m1 = performance.now();
    layers = layerStats(hc, hr, fed.length, opts.layerThreshold!, single);
    tMetrics += performance.now() - m1;
  }
  return { promptIds, tokens, steps, promptKl, layers, seconds: { driver: tDriver, teacher: tTeacher, metrics: tMetrics / 1000 } };
}

/** --layers needs two lutra models whose residual streams line up. */
export function checkLayersComparable(candidate: Runner, reference: Runner): void {
  for (const r of [candidate, reference]) {
    if (r.engine !== 'lutra' || !r.config) {
      throw new LutraError(`--layers needs hidden states from both models; ${r.spec} runs on ${r.engine}, which does not expose them`);
    }
  }
  const a = candidate.config!;
  const b = reference.config!;
  const diffs: string[] = [];
  if (a.numLayers !== b.numLayers) diffs.push(`num_hidden_layers ${a.numLayers} vs ${b.numLayers}`);
  if (a.hiddenSize !== b.hiddenSize) diffs.push(`hidden_size ${a.hiddenSize} vs ${b.hiddenSize}`);
  if (diffs.length) throw new LutraError(`--layers: the models have different architectures (${diffs.join(', ')}); per-layer cosine needs the same layers and hidden size`);
}

// ---------------------------------------------------------------------------------------------
// Aggregation and gates

export interface PromptMetrics {
  steps: number;
  kl_mean: number;
  kl_max: number;
  corr_mean: number | null;
  entropy_mean: number;
  match_rate: number;
  margin_mean: number;
  prompt_kl: number | null;
  first_divergence: number | null;
  min_layer_cosine?: number;
  first_layer_below?: number | null;
}

const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);

export function promptMetrics(run: PromptRun): PromptMetrics {
  const s = run.steps;
  const corr = s.map((m) => m.corr).filter((c) => !Number.isNaN(c));
  const fd = s.findIndex((m) => !m.match);
  const out: PromptMetrics = {
    steps: s.length,
    kl_mean: mean(s.map((m) => m.kl)),
    kl_max: Math.max(...s.map((m) => m.kl)),
    corr_mean: corr.length ? mean(corr) : null,
    entropy_mean: mean(s.map((m) => m.entropy)),
    match_rate: s.filter((m) => m.match).length / s.length,
    margin_mean: mean(s.map((m) => m.margin).filter((x) => Number.isFinite(x))),
    prompt_kl: run.promptKl.length ? mean(run.promptKl) : null,
    first_divergence: fd < 0 ? null : fd,
  };
  if (run.layers) {
    out.min_layer_cosine = Math.min(...run.layers.minCosine);
    out.first_layer_below = run.layers.firstBelow;
  }
  return out;
}

export interface Summary {
  count: number;
  steps: number;
  kl_mean: number;
  kl_max: number;
  corr_mean: number | null;
  entropy_mean: number;
  match_rate: number;
  margin_mean: number;
  prompt_kl_mean: number | null;
  diverged_prompts: number;
  first_divergence_min: number | null;
  repetition_flagged_prompts: number;
  min_layer_cosine?: number;
  /** Per layer, through the stack: minimum cosine over prompts and positions. */
  layer_min_cosine?: number[];
  /** Per layer, through the stack: mean over prompts of the mean cosine over positions. */
  layer_mean_cosine?: number[];
  /** Per layer, through the stack: mean ‖candidate − reference‖ / ‖reference‖. */
  layer_rel_error?: number[];
  first_layer_below?: number | null;
  layer_threshold?: number;
  /** Each layer on the reference's input (hidden.ts): the lowest cosine of any layer, and per layer. */
  min_single_layer_cosine?: number;
  layer_single_min_cosine?: number[];
  layer_single_mean_cosine?: number[];
  layer_single_rel_error?: number[];
}

/** Means over prompts weighted by steps (i.e. over all steps pooled). */
export function summarize(runs: PromptRun[], layerThreshold: number | null): Summary {
  const all = runs.flatMap((r) => r.steps);
  const corr = all.map((m) => m.corr).filter((c) => !Number.isNaN(c));
  const pk = runs.flatMap((r) => r.promptKl);
  const fds = runs.map((r) => r.steps.findIndex((m) => !m.match)).filter((i) => i >= 0);
  const s: Summary = {
    count: runs.length,
    steps: all.length,
    kl_mean: mean(all.map((m) => m.kl)),
    kl_max: Math.max(...all.map((m) => m.kl)),
    corr_mean: corr.length ? mean(corr) : null,
    entropy_mean: mean(all.map((m) => m.entropy)),
    match_rate: all.filter((m) => m.match).length / all.length,
    margin_mean: mean(all.map((m) => m.margin).filter((x) => Number.isFinite(x))),
    prompt_kl_mean: pk.length ? mean(pk) : null,
    diverged_prompts: fds.length,
    first_divergence_min: fds.length ? Math.min(...fds) : null,
    repetition_flagged_prompts: runs.filter((r) => {
      const f = repetitionFlags(r.tokens);
      return f.stuck_token !== null || f.phrase_repeat !== null;
    }).length,
  };
  if (layerThreshold !== null && runs.every((r) => r.layers)) {
    const L = runs[0].layers!.minCosine.length;
    const per = Array.from({ length: L }, (_, l) => Math.min(...runs.map((r) => r.layers!.minCosine[l])));
    s.layer_min_cosine = per;
    s.min_layer_cosine = Math.min(...per);
    const fb = per.findIndex((c) => !(c >= layerThreshold));
    s.first_layer_below = fb < 0 ? null : fb;
    s.layer_threshold = layerThreshold;
    const perLayer = (f: (r: PromptRun) => number[], pool: (xs: number[]) => number) => Array.from({ length: L }, (_, l) => pool(runs.map((r) => f(r)[l])));
    const min = (xs: number[]) => Math.min(...xs);
    s.layer_mean_cosine = perLayer((r) => r.layers!.meanCosine, mean);
    s.layer_rel_error = perLayer((r) => r.layers!.meanRelError, mean);
    if (runs.every((r) => r.layers!.single)) {
      s.layer_single_min_cosine = perLayer((r) => r.layers!.single!.minCosine, min);
      s.min_single_layer_cosine = Math.min(...s.layer_single_min_cosine);
      s.layer_single_mean_cosine = perLayer((r) => r.layers!.single!.meanCosine, mean);
      s.layer_single_rel_error = perLayer((r) => r.layers!.single!.meanRelError, mean);
    }
  }
  return s;
}

export interface Gate {
  metric: keyof Summary;
  op: '<' | '<=' | '>' | '>=';
  value: number;
  text: string;
}

const GATE_METRICS: Record<string, keyof Summary> = {
  kl: 'kl_mean',
  kl_mean: 'kl_mean',
  kl_max: 'kl_max',
  corr: 'corr_mean',
  corr_mean: 'corr_mean',
  entropy: 'entropy_mean',
  entropy_mean: 'entropy_mean',
  match: 'match_rate',
  match_rate: 'match_rate',
  prompt_kl: 'prompt_kl_mean',
  prompt_kl_mean: 'prompt_kl_mean',
  layer: 'min_layer_cosine',
  layer_cos: 'min_layer_cosine',
  min_layer_cosine: 'min_layer_cosine',
  single_layer: 'min_single_layer_cosine',
  min_single_layer_cosine: 'min_single_layer_cosine',
};

/** The per-layer values a layer gate is judged on, to name the first failing layer. */
const PER_LAYER: Partial<Record<keyof Summary, keyof Summary>> = { min_layer_cosine: 'layer_min_cosine', min_single_layer_cosine: 'layer_single_min_cosine' };

/** "kl<0.01,corr>0.99,match>0.98" → gates. */
export function parseGates(text: string, layers: boolean): Gate[] {
  const gates: Gate[] = [];
  for (const part of text.split(',')) {
    const p = part.trim();
    if (p === '') continue;
    const m = /^([a-z_]+)\s*(<=|>=|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?%?)$/.exec(p);
    if (!m) throw new LutraError(`--gate "${p}": expected METRIC<VALUE or METRIC>VALUE, e.g. kl<0.01`);
    const metric = GATE_METRICS[m[1]];
    if (!metric) throw new LutraError(`--gate "${p}": unknown metric "${m[1]}"; known: kl, kl_max, corr, entropy, match, prompt_kl, layer, single_layer`);
    if (PER_LAYER[metric] && !layers) throw new LutraError(`--gate "${p}": the layer cosine needs --layers`);
    const value = m[3].endsWith('%') ? Number(m[3].slice(0, -1)) / 100 : Number(m[3]);
    gates.push({ metric, op: m[2] as Gate['op'], value, text: p });
  }
  if (gates.length === 0) throw new LutraError('--gate: no thresholds given');
  return gates;
}

export interface GateResult {
  gate: Gate;
  actual: number | null;
  pass: boolean;
  /** A failed per-layer cosine gate: the first layer whose cosine fails it. */
  firstLayer?: number;
}

export function evaluateGates(gates: Gate[], s: Summary): GateResult[] {
  const holds = (gate: Gate, x: number) => (gate.op === '<' ? x < gate.value : gate.op === '<=' ? x <= gate.value : gate.op === '>' ? x > gate.value : x >= gate.value);
  return gates.map((gate) => {
    const v = s[gate.metric];
    const actual = typeof v === 'number' ? v : null;
    const pass = actual !== null && !Number.isNaN(actual) && holds(gate, actual);
    const r: GateResult = { gate, actual, pass };
    // A per-layer cosine gate names the first layer that fails it (the error's origin in depth).
    const perLayer = PER_LAYER[gate.metric] && (s[PER_LAYER[gate.metric]!] as number[] | undefined);
    if (!pass && perLayer) {
      const l = perLayer.findIndex((c) => !holds(gate, c));
      if (l >= 0) r.firstLayer = l;
    }
    return r;
  });
}
