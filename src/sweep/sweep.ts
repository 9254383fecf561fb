// `lutra sweep` (issue 8): convert one source model under each named configuration, compare every
// package against the source run in f32 math with the divergence harness, time its decode, and
// gather one row per configuration. A configuration that fails (a bad format, a conversion or
// harness error) gets its error in its row; the sweep goes on.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { buildPlan } from '../quant/plan.js';
import { convert } from '../quant/convert.js';
import { checkAlpha } from '../fp16/scale.js';
import { auditFp16, ALPHA_TARGET, CALIBRATION_PROMPT } from '../fp16/audit.js';
import { comparePrompt, LutraRunner, promptMetrics, summarize, type PromptRun, type Summary } from '../verify/compare.js';
import { LAYER_COSINE_GATE } from '../verify/report.js';
import type { PromptItem } from '../verify/dataset.js';
import { loadModel, makeBackend } from '../runtime/load.js';
import { timeLutra, type LutraTiming } from '../bench/timing.js';
import type { Backend } from '../backend/backend.js';
import { LutraError } from '../util/errors.js';
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
  /** Activation precision of the candidate's matmuls, as its backend reports it. */
  activations: string | null;
  alpha: number | null;
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

/** What a backend does with matmul inputs: backends that quantize them say so in `activations`. */
function activationsOf(backend: Backend): string {
  const a = (backend as unknown as { activations?: unknown }).activations;
  return typeof a === 'string' ? a : 'f32';
}

const message = (e: unknown) => (e instanceof LutraError ? e.message : `internal error: ${(e as Error)?.message ?? String(e)}`);

export async function runSweep(opts: SweepOptions): Promise<SweepResult> {
  const t0 = performance.now();
  const emit = opts.onEvent ?? (() => {});
  const reference = LutraRunner.open(opts.model, opts.backend, { prefillBatch: opts.prefillBatch });
  const rows: SweepRow[] = [];
  const pkgRoot = opts.keepPackages ? join(opts.outDir, 'packages') : join(opts.outDir, `.packages-${process.pid}`);
  try {
    const tok = reference.tokenizer;
    if (!tok) throw new LutraError(`${opts.model}: no tokenizer.json; the sweep needs one to encode the prompts`);
    const encode = (text: string) => (opts.template && tok.hasChatTemplate ? tok.encodeChat([{ role: 'user', content: text }]) : tok.encode(text));
    const prompts = opts.prompts.map((p) => ({ ...p, ids: encode(p.prompt) }));
    for (const [index, cfg] of opts.configs.entries()) {
      emit({ kind: 'start', index, name: cfg.name });
      const row = await runConfig(cfg, index, join(pkgRoot, cfg.name), reference, prompts, opts, emit);
      rows.push(row);
      emit({ kind: 'done', index, row });
      opts.onRow?.(rows);
    }
  } finally {
    await reference.dispose();
    reference.model.backend.dispose?.();
    if (!opts.keepPackages) rmSync(pkgRoot, { recursive: true, force: true });
  }
  return {
    model: opts.model,
    reference_engine: `${reference.description}, f32 numerics, activations ${activationsOf(reference.model.backend)}`,
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
    name: cfg.name, convert: convertFlags(cfg), numerics: cfg.numerics, activations: null, alpha: null,
    size_bytes: null, size_mb: null, shards_sha256: null, summary: null, prompts: [],
    decode_tok_s: null, prefill_tok_s: null, timing: null, seconds: { convert: 0, compare: 0, timing: 0 }, error: null,
  };
  const errors: string[] = [];
  const phase = (p: SweepPhase, done: number, total: number) => emit({ kind: 'phase', index, name: cfg.name, phase: p, done, total });

  // 1. Convert (a stale package of an earlier sweep with this name is replaced).
  let t = performance.now();
  try {
    phase('convert', 0, 1);
    const plan = buildPlan({ quant: cfg.quant, lut1: cfg.lut1, lut2: cfg.lut2, lut3: cfg.lut3, weightThreshold: 0 });
    const fp16Scale = chooseAlpha(cfg, reference);
    row.alpha = fp16Scale.alpha;
    if (existsSync(join(pkg, 'meta.yaml'))) rmSync(pkg, { recursive: true, force: true });
    convert({
      src: opts.model, out: pkg, plan, fp16Scale, prefillBatch: opts.prefillBatch,
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
    if (cfg.numerics !== 'f32') {
      throw new LutraError(`numerics ${cfg.numerics}: this build's harness runs f32 numerics only (LutraRunner has no numerics option)`);
    }
    // The reference's tokenizer encoded the prompts; the candidate needs none (real Gemma's takes seconds to load).
    const { model, loadSeconds } = loadModel(pkg, makeBackend(opts.backend), { tokenizer: false });
    candidate = new LutraRunner(pkg, model, null, loadSeconds, opts.prefillBatch);
    row.activations = activationsOf(candidate.model.backend);
    const runs: PromptRun[] = [];
    for (const [k, p] of prompts.entries()) {
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
  const r = auditFp16(reference.model, [ids]);
  return { alpha: r.alpha, chosenBy: `auto: ${ALPHA_TARGET} / peak residual ${r.residualPeak.toExponential(4)} over ${r.positions} calibration positions, rounded down to 1/64` };
}
