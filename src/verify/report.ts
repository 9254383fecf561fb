// Outputs of `lutra compare`: results.jsonl, summary.json, report.md and report.html (report-html.ts;
// each written under a temporary name and renamed), and the table printed to stdout.
import { mkdirSync } from 'node:fs';
import { writeFileAtomic } from '../util/atomic-output.js';
import { join } from 'node:path';
import type { PromptMetrics, RepetitionFlags, Summary, GateResult } from './compare.js';
import { LutraError } from '../util/errors.js';
import { reportHtml } from './report-html.js';

export interface ResultRecord {
  id: string;
  /** Carried from the dataset line (category, risk, ...). */
  fields: Record<string, unknown>;
  prompt: string | null;
  ids: number[];
  generated_ids: number[];
  generated_text: string | null;
  driver: string;
  steps: number;
  first_divergence: number | null;
  metrics: PromptMetrics;
  repetition: RepetitionFlags;
  /** --layers: per-layer minimum/mean cosine over positions, the position of the minimum, the first layer below the threshold. */
  layers: {
    min_cosine: number[];
    mean_cosine: number[];
    worst_position: number[];
    /** Mean ‖candidate − reference‖ / ‖reference‖ per layer. */
    rel_error: number[];
    first_below: number | null;
    threshold: number;
    /** Each layer run on the reference's input. */
    single: { min_cosine: number[]; mean_cosine: number[]; rel_error: number[] } | null;
  } | null;
  per_step: { kl: number[]; corr: (number | null)[]; entropy: number[]; match: number[]; margin: number[]; ref_top: number[]; cand_top: number[] };
  prompt_kl: number[];
  seconds: { driver: number; teacher: number; metrics: number };
}

export interface RunInfo {
  candidate: string;
  reference: string;
  candidate_engine: string;
  reference_engine: string;
  driver: string;
  max_tokens: number;
  template: boolean;
  stop_at_eos: boolean;
  correlation_of: 'logits' | 'log-probabilities';
  seconds: { load: number; run: number; total: number };
}

export type SummaryFile = Summary &
  RunInfo & {
    gates?: { gate: string; actual: number | null; pass: boolean }[];
    /** fp16 overflows met under --on-overflow continue, per side (the first of each session). */
    overflows?: { candidate: string[]; reference: string[] };
  };

// ---------------------------------------------------------------------------------------------
// Judgement against the guidance bands for FP16 parity and for quantized models

export type Verdict = 'healthy' | 'borderline' | 'concerning' | 'n/a';

interface Band {
  good: (v: number) => boolean;
  bad: (v: number) => boolean;
  text: string;
}

export const GUIDANCE: Record<'fp16' | 'quantized', Partial<Record<'kl_mean' | 'corr_mean' | 'match_rate', Band>>> = {
  fp16: {
    kl_mean: { good: (v) => v < 0.01, bad: (v) => v > 0.1, text: '< 0.01 healthy, > 0.1 concerning' },
    corr_mean: { good: (v) => v > 0.99, bad: (v) => v < 0.95, text: '> 0.99 healthy, < 0.95 concerning' },
    match_rate: { good: (v) => v > 0.98, bad: (v) => v < 0.9, text: '> 98% healthy, < 90% concerning' },
  },
  quantized: {
    kl_mean: { good: (v) => v < 0.3, bad: (v) => v > 0.5, text: '< 0.3 healthy, > 0.5 concerning' },
    corr_mean: { good: (v) => v > 0.95, bad: (v) => v < 0.9, text: '> 0.95 healthy, < 0.90 concerning' },
    match_rate: { good: (v) => v > 0.85, bad: (v) => v < 0.75, text: '> 85% healthy, < 75% concerning' },
  },
};
const ENTROPY_BAND: Band = { good: (v) => v > 0.5, bad: (v) => v < 0.1, text: '> 0.5 healthy, < 0.1 collapse risk' };
export const LAYER_COSINE_GATE = 0.997;

function judge(band: Band | undefined, v: number | null | undefined): Verdict {
  if (!band || v === null || v === undefined || Number.isNaN(v)) return 'n/a';
  return band.good(v) ? 'healthy' : band.bad(v) ? 'concerning' : 'borderline';
}

// ---------------------------------------------------------------------------------------------
// Formatting

export function fmt(v: number | null | undefined, digits = 4): string {
  if (v === null || v === undefined || Number.isNaN(v)) return '–';
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a < 1e-3 || a >= 1e5) return v.toExponential(2);
  return v.toFixed(digits);
}
export const pct = (v: number) => `${(100 * v).toFixed(2)}%`;

function table(head: string[], rows: string[][]): string[] {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ');
  return [line(head), w.map((n) => '-'.repeat(n)).join('  '), ...rows.map(line)];
}

export function promptRow(r: ResultRecord, layers: boolean): string[] {
  const m = r.metrics;
  const row = [r.id, String(m.steps), fmt(m.kl_mean), fmt(m.corr_mean), fmt(m.entropy_mean), pct(m.match_rate), m.first_divergence === null ? '–' : String(m.first_divergence), fmt(m.prompt_kl)];
  if (layers) row.push(fmt(m.min_layer_cosine, 6), m.first_layer_below === null || m.first_layer_below === undefined ? '–' : String(m.first_layer_below));
  return row;
}

/** The stdout table: one row per prompt (up to 50) and the pooled summary. */
export function formatTable(results: ResultRecord[], s: SummaryFile): string {
  const layers = s.min_layer_cosine !== undefined;
  const head = ['prompt', 'steps', 'KL', 'corr', 'entropy', 'match', 'first div', 'prompt KL'];
  if (layers) head.push('min layer cos', 'first layer <');
  const shown = results.slice(0, 50);
  const all: ResultRecord = {
    id: `ALL (${s.count})`,
    metrics: {
      steps: s.steps, kl_mean: s.kl_mean, kl_max: s.kl_max, corr_mean: s.corr_mean, entropy_mean: s.entropy_mean, match_rate: s.match_rate,
      margin_mean: s.margin_mean, prompt_kl: s.prompt_kl_mean, first_divergence: s.first_divergence_min,
      min_layer_cosine: s.min_layer_cosine, first_layer_below: s.first_layer_below,
    },
  } as ResultRecord;
  const lines = table(head, [...shown.map((r) => promptRow(r, layers)), promptRow(all, layers)]);
  if (results.length > shown.length) lines.splice(2 + shown.length, 0, `… ${results.length - shown.length} more prompts in results.jsonl`);
  lines.push(
    '',
    `candidate ${s.candidate} (${s.candidate_engine}) vs reference ${s.reference} (${s.reference_engine}); driver: ${s.driver}; ` +
      `KL(P_ref ‖ P_cand) in nats; correlation of ${s.correlation_of}; first div = first step whose top-1 differs (ALL: earliest).`,
    `FP16 parity: KL ${judge(GUIDANCE.fp16.kl_mean, s.kl_mean)}, corr ${judge(GUIDANCE.fp16.corr_mean, s.corr_mean)}, match ${judge(GUIDANCE.fp16.match_rate, s.match_rate)}; ` +
      `quantized: KL ${judge(GUIDANCE.quantized.kl_mean, s.kl_mean)}, corr ${judge(GUIDANCE.quantized.corr_mean, s.corr_mean)}, match ${judge(GUIDANCE.quantized.match_rate, s.match_rate)}; ` +
      `entropy ${judge(ENTROPY_BAND, s.entropy_mean)}` +
      (layers ? `; layers ${s.first_layer_below === null ? `all ≥ ${s.layer_threshold}` : `first below ${s.layer_threshold}: layer ${s.first_layer_below}`}` : ''),
    `${s.steps} steps in ${s.seconds.run.toFixed(1)} s (models loaded in ${s.seconds.load.toFixed(1)} s)`,
  );
  return lines.join('\n');
}

export function formatGates(results: GateResult[]): string {
  return results
    .map((g) => `gate ${g.gate.text}: ${g.pass ? 'pass' : 'FAIL'} (${g.gate.metric} = ${fmt(g.actual, 6)}${g.firstLayer === undefined ? '' : `, first failing layer ${g.firstLayer}`})`)
    .join('\n');
}

// ---------------------------------------------------------------------------------------------
// The rows both reports show: the summary judged against the guidance, and the gates

/** A verdict and the band it was judged against, e.g. healthy by "< 0.01 healthy, > 0.1 concerning". */
export interface Judged {
  verdict: Verdict;
  band: string;
}

export interface SummaryRow {
  metric: string;
  value: string;
  /** Against the FP16-parity and the quantized guidance; null where there is none. */
  fp16: Judged | null;
  quantized: Judged | null;
}

function judged(band: Band | undefined, v: number | null | undefined): Judged | null {
  return band ? { verdict: judge(band, v), band: band.text } : null;
}

export function summaryRows(s: SummaryFile): SummaryRow[] {
  const e = judged(ENTROPY_BAND, s.entropy_mean);
  const rows: SummaryRow[] = [
    { metric: 'KL(P_ref ‖ P_cand), nats', value: fmt(s.kl_mean), fp16: judged(GUIDANCE.fp16.kl_mean, s.kl_mean), quantized: judged(GUIDANCE.quantized.kl_mean, s.kl_mean) },
    { metric: `correlation (${s.correlation_of})`, value: fmt(s.corr_mean), fp16: judged(GUIDANCE.fp16.corr_mean, s.corr_mean), quantized: judged(GUIDANCE.quantized.corr_mean, s.corr_mean) },
    { metric: 'top-1 match', value: pct(s.match_rate), fp16: judged(GUIDANCE.fp16.match_rate, s.match_rate), quantized: judged(GUIDANCE.quantized.match_rate, s.match_rate) },
    { metric: 'candidate entropy, nats', value: fmt(s.entropy_mean), fp16: e, quantized: e },
    { metric: 'prompt-phase KL, nats', value: fmt(s.prompt_kl_mean), fp16: null, quantized: null },
    { metric: 'KL max over steps', value: fmt(s.kl_max), fp16: null, quantized: null },
    { metric: 'reference top-1 margin', value: fmt(s.margin_mean), fp16: null, quantized: null },
    { metric: 'prompts diverged', value: `${s.diverged_prompts} / ${s.count} (earliest step ${s.first_divergence_min ?? '–'})`, fp16: null, quantized: null },
  ];
  if (s.min_layer_cosine !== undefined) {
    // Judged against --layer-threshold in the gates, not against the guidance bands.
    rows.push({ metric: 'min per-layer cosine', value: fmt(s.min_layer_cosine, 6) + (s.first_layer_below == null ? '' : `, first below ${s.layer_threshold} at layer ${s.first_layer_below}`), fp16: null, quantized: null });
  }
  return rows;
}

export interface GateRow {
  gate: string;
  value: string;
  pass: boolean;
  /** --gate thresholds set the exit status; the --layers threshold is only reported. */
  enforced: boolean;
}

/** The --gate results, and the per-layer cosine threshold of --layers unless a --gate already checks it. */
export function gateRows(s: SummaryFile): GateRow[] {
  const rows: GateRow[] = (s.gates ?? []).map((g) => ({ gate: g.gate, value: fmt(g.actual, 6), pass: g.pass, enforced: true }));
  const layerGate = (s.gates ?? []).some((g) => /^\s*layer\b/.test(g.gate));
  if (s.min_layer_cosine !== undefined && s.layer_threshold !== undefined && !layerGate) {
    rows.push({
      gate: `per-layer cosine ≥ ${s.layer_threshold}`,
      value: fmt(s.min_layer_cosine, 6) + (s.first_layer_below == null ? '' : ` (layer ${s.first_layer_below} first below)`),
      pass: s.first_layer_below === null,
      enforced: false,
    });
  }
  return rows;
}

export const GUIDANCE_TEXT =
  'FP16 parity: KL < 0.01 healthy, > 0.1 concerning; correlation > 0.99 / < 0.95; match > 98% / < 90%; ' +
  'entropy > 0.5, collapse risk < 0.1. Quantized models: KL < 0.3 / > 0.5, correlation > 0.95 / < 0.90, match > 85% / < 75%. ' +
  'Between the two bounds: borderline.';

export const DEFINITIONS_TEXT =
  'Per step, in float64 over the full vocabulary at temperature 1: KL(P_ref ‖ P_cand) = Σ p_ref (log p_ref − log p_cand) in nats; ' +
  'Pearson correlation of the raw logit vectors (of log-probabilities clamped at log(1e-45) when a side is llama.cpp, which returns only log-probabilities); ' +
  'entropy of the candidate; top-1 match; top-1 margin of the reference. Step 0 is the prediction after the last prompt token. ' +
  'Prompt KL: mean KL over the prompt positions (predictions of prompt tokens 2..P), both models teacher-forced. ' +
  'Summary means are over all steps pooled (weighted by steps).';

function markdown(results: ResultRecord[], s: SummaryFile): string {
  const layers = s.min_layer_cosine !== undefined;
  const L: string[] = [];
  L.push('# lutra compare', '');
  L.push(`- candidate: \`${s.candidate}\` (${s.candidate_engine})`, `- reference: \`${s.reference}\` (${s.reference_engine})`);
  L.push(`- driver: ${s.driver} (generates greedily; the other model is teacher-forced on its tokens)`);
  L.push(`- ${s.count} prompt(s), ${s.steps} steps (max ${s.max_tokens} per prompt${s.stop_at_eos ? ', stopping at EOS' : ''}), chat template ${s.template ? 'on' : 'off'}`);
  L.push(`- run time ${s.seconds.run.toFixed(1)} s, load ${s.seconds.load.toFixed(1)} s`, '');
  L.push('## Summary (means over all steps)', '');
  L.push('| metric | value | FP16 parity | quantized |', '|---|---|---|---|');
  for (const r of summaryRows(s)) L.push(`| ${r.metric} | ${r.value} | ${r.fp16?.verdict ?? '–'} | ${r.quantized?.verdict ?? '–'} |`);
  L.push('', `Guidance: ${GUIDANCE_TEXT}`, '');
  const gates = gateRows(s);
  if (gates.length) {
    L.push('## Gates', '', '| gate | value | result |', '|---|---|---|');
    for (const g of gates) L.push(`| \`${g.gate}\` | ${g.value} | ${g.pass ? 'pass' : '**FAIL**'}${g.enforced ? '' : ' (reported, not enforced)'} |`);
    L.push('');
  }
  L.push('## Per prompt', '');
  const head = ['id', 'steps', 'KL', 'corr', 'entropy', 'match', 'first div', 'prompt KL'];
  if (layers) head.push('min layer cos', 'first layer <');
  head.push('repetition');
  L.push(`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`);
  for (const r of results) L.push(`| ${[...promptRow(r, layers).map((c) => c.replace(/\|/g, '\\|')), repetitionText(r) || '–'].join(' | ')} |`);
  L.push('');
  if (layers && s.layer_min_cosine) {
    const single = s.layer_single_min_cosine;
    L.push(
      '## Per layer (residual stream leaving the layer)',
      '',
      'Through the stack: both models on their own inputs. Single layer: the candidate\'s layer on the reference\'s input (its stream replaced by the reference\'s after every layer). Cosines: minimum over prompts and positions; relative error ‖cand − ref‖/‖ref‖: mean over positions.',
      '',
      `| layer | min cosine | mean cosine | rel. error | status |${single ? ' single-layer min cosine | single-layer rel. error |' : ''}`,
      `|---|---|---|---|---|${single ? '---|---|' : ''}`,
    );
    s.layer_min_cosine.forEach((c, l) => {
      const row = [l, fmt(c, 6), fmt(s.layer_mean_cosine?.[l], 6), fmt(s.layer_rel_error?.[l], 4), c >= s.layer_threshold! ? 'ok' : '**below**'];
      if (single) row.push(fmt(single[l], 6), fmt(s.layer_single_rel_error?.[l], 4));
      L.push(`| ${row.join(' | ')} |`);
    });
    L.push('');
  }
  L.push('## Definitions', '', DEFINITIONS_TEXT, '');
  return L.join('\n');
}

export function repetitionText(r: ResultRecord): string {
  const f = r.repetition;
  return [f.stuck_token ? `stuck token at ${f.stuck_token.step}` : '', f.phrase_repeat ? `${f.phrase_repeat.length}-token phrase ×3 at ${f.phrase_repeat.step}` : ''].filter(Boolean).join('; ');
}

// ---------------------------------------------------------------------------------------------

export function writeOutputs(dir: string, results: ResultRecord[], summary: SummaryFile): string[] {
  try {
    mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw new LutraError(`--out-dir ${dir}: cannot create (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const files: [string, string][] = [
    // Dataset fields (category, risk, ...) sit at the top level of each line, next to ours.
    ['results.jsonl', results.map(({ fields, id, ...r }) => JSON.stringify({ id, ...fields, ...r })).join('\n') + '\n'],
    ['summary.json', JSON.stringify(summary, null, 2) + '\n'],
    ['report.md', markdown(results, summary)],
    ['report.html', reportHtml(results, summary)],
  ];
  for (const [name, text] of files) writeFileAtomic(join(dir, name), text);
  return files.map(([n]) => join(dir, n));
}
