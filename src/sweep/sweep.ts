// `lutra sweep`: convert one source model under each named configuration, compare every
// package against the source run in f32 math with the divergence harness, time its decode, and
// gather one row per configuration. A configuration that fails (a bad format, a conversion or
// harness error) gets its error in its row; the sweep goes on.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { buildPlan, type QuantPlan } from '../quant/plan.js';
import { formatTraits } from '../model/formats.js';
import { convert } from '../quant/convert.js';
import { checkAlpha } from '../fp16/scale.js';
import { auditFp16, ALPHA_TARGET, CALIBRATION_PROMPT, CALIBRATION_STEPS } from '../fp16/audit.js';
import { F32_NUMERICS, parseNumerics } from '../fp16/numerics.js';
import { comparePrompt, LutraRunner, promptMetrics, summarize, type PromptRun, type Summary } from '../verify/compare.js';
import { LAYER_COSINE_GATE } from '../verify/report.js';
import type { PromptItem } from '../verify/dataset.js';
import { loadModel, makeBackend } from '../runtime/load.js';
import { timeLutra, type LutraTiming } from '../bench/timing.js';
import type { Backend } from '../backend/backend.js';
import { LutraError } from '../util/errors.js';
import { registerTemp, removeTemp, sweepStale, tempPathFor, yieldToEvents } from '../util/atomic-output.js';
import { convertFlags, type SweepConfig } from './config.js';

export interface SweepOptions {
  /** The source model: converted under every configuration, and the f32 reference. */
  model: string;
  configs: SweepConfig[];
  prompts: PromptItem[];
  /** Packages are written under here (kept in packages/NAME with keepPackages). */
  outDir: string;
  maxTokens: number;
  /** Backend of both the candidates and the reference. */
  backend: string;
  layers: boolean;
  /** Chat template around each prompt when the tokenizer has one (as `lutra compare`). */
  template: boolean;
  prefillBatch: number;
  /** Decode timing per package (timeLutra), or null to skip it. */
  timing: { prefill: number; decode: number; threads?: number } | null;
  keepPackages: boolean;
  onEvent?: (e: SweepEvent) => void;
  /** Called after every row (for incremental output). */
  onRow?: (rows: SweepRow[]) => void;
}

export type SweepPhase = 'convert' | 'compare' | 'timing';
export type SweepEvent =
  | { kind: 'start'; index: number; name: string }
  | { kind: 'phase'; index: number; name: string; phase: SweepPhase; done: number; total: number }
  | { kind: 'done'; index: number; row: SweepRow };

export interface PromptRow {
  id: string;
  category: unknown;
  risk: unknown;
  kl_mean: number;
  match_rate: number;
  first_divergence: number | null;
  min_layer_cosine: number | null;
}

export interface SweepRow {
  name: string;
  /** The configuration as `lutra convert` flags. */
  convert: string;
  numerics: string;
  /** Inputs of the candidate's int8/int4/LUT matmuls (q8 or f32) as its backend reports them; null without such matrices. */
  activations: string | null;
  alpha: number | null;
  /** How α was chosen (the audit's peak for auto). */
  alpha_chosen_by: string | null;
  /** Bytes of the package's safetensors shards (headers included); MB = 1e6 bytes. */
  size_bytes: number | null;
  size_mb: number | null;
  /** SHA-256 of the shards, in name order: equal across runs when conversion is deterministic. */
  shards_sha256: string | null;
  summary: Summary | null;
  prompts: PromptRow[];
  decode_tok_s: number | null;
  prefill_tok_s: number | null;
  timing: LutraTiming | null;
  seconds: { convert: number; compare: number; timing: number };
  /** What failed, phase first; null when the row is complete. */
  error: string | null;
}

export interface SweepResult {
  model: string;
  reference_engine: string;
  backend: string;
  max_tokens: number;
  layers: boolean;
  template: boolean;
  prompts: number;
  timing: SweepOptions['timing'];
  rows: SweepRow[];
  seconds: number;
}

const SHARD = /^model-\d{5}-of-\d{5}\.safetensors$/;

/** Total bytes and SHA-256 of a package's weight shards. */
export function shardStats(dir: string): { bytes: number; sha256: string } {
  const files = readdirSync(dir).filter((f) => SHARD.test(f)).sort();
  if (files.length === 0) throw new LutraError(`${dir}: no model-NNNNN-of-NNNNN.safetensors shards`);
  const h = createHash('sha256');
  let bytes = 0;
  for (const f of files) {
    bytes += statSync(join(dir, f)).size;
    h.update(readFileSync(join(dir, f)));
  }
  return { bytes, sha256: h.digest('hex') };
}

/** Inputs of int8/int4/LUT matmuls: backends that can quantize them say so in `activations` (an fp16 wrapper holds the real one in `inner`). */
function activationsOf(backend: Backend): string {
  const b = backend as unknown as { activations?: unknown; inner?: Backend };
  if (typeof b.activations === 'string') return b.activations;
  return b.inner ? activationsOf(b.inner) : 'f32';
}

const message = (e: unknown) => (e instanceof LutraError ? e.message : `internal error: ${(e as Error)?.message ?? String(e)}`);

export async function runSweep(opts: SweepOptions): Promise<SweepResult> {
  const t0 = performance.now();
  const emit = opts.onEvent ?? (() => {});
  // The reference is the source in f32 math whatever it records (a package may say fp16).
  const reference = LutraRunner.open(opts.model, opts.backend, { prefillBatch: opts.prefillBatch, numerics: F32_NUMERICS });
  const rows: SweepRow[] = [];
  // Without keepPackages the packages live in a registered temporary folder: removed at the end, on an
  // interruption, or (after a SIGKILL) by the next run writing into outDir.
  const pkgRoot = opts.keepPackages ? join(opts.outDir, 'packages') : tempPathFor(join(opts.outDir, 'packages'));
  if (!opts.keepPackages) {
    sweepStale(opts.outDir);
    registerTemp(pkgRoot);
  }
  try {
    const tok = reference.tokenizer;
    if (!tok) throw new LutraError(`${opts.model}: no tokenizer.json; the sweep needs one to encode the prompts`);
    const encode = (text: string) => (opts.template && tok.hasChatTemplate ? tok.encodeChat([{ role: 'user', content: text }]) : tok.encode(text));
    const prompts = opts.prompts.map((p) => ({ ...p, ids: encode(p.prompt) }));
    for (const [index, cfg] of opts.configs.entries()) {
      await yieldToEvents();
      emit({ kind: 'start', index, name: cfg.name });
      const row = await runConfig(cfg, index, join(pkgRoot, cfg.name), reference, prompts, opts, emit);
      rows.push(row);
      emit({ kind: 'done', index, row });
      opts.onRow?.(rows);
    }
  } finally {
    await reference.dispose();
    reference.model.backend.dispose?.();
    if (!opts.keepPackages) removeTemp(pkgRoot);
  }
  return {
    model: opts.model,
    reference_engine: `${reference.description}, f32 numerics`,
    backend: opts.backend,
    max_tokens: opts.maxTokens,
    layers: opts.layers,
    template: opts.template,
    prompts: opts.prompts.length,
    timing: opts.timing,
    rows,
    seconds: (performance.now() - t0) / 1000,
  };
}

async function runConfig(
  cfg: SweepConfig, index: number, pkg: string, reference: LutraRunner,
  prompts: (PromptItem & { ids: number[] })[], opts: SweepOptions, emit: (e: SweepEvent) => void,
): Promise<SweepRow> {
  const row: SweepRow = {
    name: cfg.name, convert: convertFlags(cfg), numerics: cfg.numerics, activations: null, alpha: null, alpha_chosen_by: null,
    size_bytes: null, size_mb: null, shards_sha256: null, summary: null, prompts: [],
    decode_tok_s: null, prefill_tok_s: null, timing: null, seconds: { convert: 0, compare: 0, timing: 0 }, error: null,
  };
  const errors: string[] = [];
  const phase = (p: SweepPhase, done: number, total: number) => emit({ kind: 'phase', index, name: cfg.name, phase: p, done, total });

  // 1. Convert (a package of an earlier sweep with this name is replaced).
  let t = performance.now();
  let plan: QuantPlan;
  try {
    phase('convert', 0, 1);
    plan = buildPlan({ quant: cfg.quant, lut1: cfg.lut1, lut2: cfg.lut2, lut3: cfg.lut3, weightThreshold: 0 });
    const fp16Scale = chooseAlpha(cfg, reference);
    row.alpha = fp16Scale.alpha;
    row.alpha_chosen_by = fp16Scale.chosenBy;
    await convert({
      src: opts.model, out: pkg, force: true, plan, fp16Scale, prefillBatch: opts.prefillBatch, numerics: cfg.numerics,
      command: `lutra convert --model ${opts.model} --out ${pkg} ${row.convert}`.trim(),
      onTensor: (_, i, total) => phase('convert', i, total),
    });
    const s = shardStats(pkg);
    row.size_bytes = s.bytes;
    row.size_mb = s.bytes / 1e6;
    row.shards_sha256 = s.sha256;
  } catch (e) {
    row.error = `convert: ${message(e)}`;
    return row;
  } finally {
    row.seconds.convert = (performance.now() - t) / 1000;
  }

  // 2. The divergence harness: the candidate drives, the reference is teacher-forced.
  t = performance.now();
  let candidate: LutraRunner | null = null;
  try {
    // The reference's tokenizer encoded the prompts; the candidate needs none (real Gemma's takes seconds to load).
    // An fp16 overflow stops the prompt with an error naming layer and op: the row reports it.
    const { model, loadSeconds } = loadModel(pkg, makeBackend(opts.backend), { tokenizer: false, numerics: parseNumerics(cfg.numerics) });
    candidate = new LutraRunner(pkg, model, null, loadSeconds, opts.prefillBatch);
    // Activation precision only changes the matmuls of formats with a q8 activation path (int8/int4).
    if (Object.values(plan.parts).some((f) => formatTraits(f).q8)) row.activations = activationsOf(candidate.model.backend);
    const runs: PromptRun[] = [];
    for (const [k, p] of prompts.entries()) {
      await yieldToEvents();
      phase('compare', k, prompts.length);
      const run = await comparePrompt(candidate, reference, p.ids, {
        maxTokens: opts.maxTokens, driver: 'candidate', layerThreshold: opts.layers ? LAYER_COSINE_GATE : null,
      });
      runs.push(run);
      const m = promptMetrics(run);
      row.prompts.push({
        id: p.id, category: p.fields.category ?? null, risk: p.fields.risk ?? null, kl_mean: m.kl_mean, match_rate: m.match_rate,
        first_divergence: m.first_divergence, min_layer_cosine: m.min_layer_cosine ?? null,
      });
    }
    row.summary = summarize(runs, opts.layers ? LAYER_COSINE_GATE : null);
  } catch (e) {
    errors.push(`compare: ${message(e)}`);
  } finally {
    await candidate?.dispose();
    candidate?.model.backend.dispose?.();
    row.seconds.compare = (performance.now() - t) / 1000;
  }

  // 3. Decode speed of the package on its own (a fresh load, so the harness's state does not count).
  if (opts.timing) {
    t = performance.now();
    try {
      phase('timing', 0, 1);
      const tm = await timeLutra(pkg, { ...opts.timing, backend: opts.backend, budgetSeconds: 10 });
      row.timing = tm;
      row.decode_tok_s = tm.decode_tok_s;
      row.prefill_tok_s = tm.prefill_tok_s;
    } catch (e) {
      errors.push(`timing: ${message(e)}`);
    } finally {
      row.seconds.timing = (performance.now() - t) / 1000;
    }
  }
  if (!opts.keepPackages) rmSync(pkg, { recursive: true, force: true });
  row.error = errors.length ? errors.join('; ') : null;
  return row;
}

/** α for the conversion: as `lutra convert --fp16-scale` (auto = the audit on its calibration prompt, on the source model). */
function chooseAlpha(cfg: SweepConfig, reference: LutraRunner): { alpha: number; chosenBy: string } {
  if (cfg.fp16Scale !== 'auto') {
    const alpha = checkAlpha(Number(cfg.fp16Scale), `fp16-scale ${cfg.fp16Scale}`);
    return { alpha, chosenBy: alpha === 1 ? 'none' : 'given in the sweep configs' };
  }
  const tok = reference.tokenizer!;
  const ids = tok.hasChatTemplate ? tok.encodeChat([{ role: 'user', content: CALIBRATION_PROMPT }]) : tok.encode(CALIBRATION_PROMPT);
  const r = auditFp16(reference.model, [ids], { generate: CALIBRATION_STEPS });
  return {
    alpha: r.alpha,
    chosenBy: `auto: ${ALPHA_TARGET} / peak residual ${r.residualPeak.toExponential(4)} over ${r.positions} positions (the built-in calibration prompt, ${CALIBRATION_STEPS} greedy steps), rounded down to 1/64`,
  };
}
