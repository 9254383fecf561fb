// Outputs of `lutra compare`: results.jsonl, summary.json, report.md and report.html (each written
// under a temporary name and renamed), and the table printed to stdout.
import { mkdirSync } from 'node:fs';
import { writeFileAtomic } from '../util/atomic-output.js';
import { join } from 'node:path';
import type { PromptMetrics, RepetitionFlags, Summary, GateResult } from './compare.js';
import { LutraError } from '../util/errors.js';

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
  layers: { min_cosine: number[]; mean_cosine: number[]; worst_position: number[]; first_below: number | null; threshold: number } | null;
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
// Judgement against the seed's guidance (anchors-anemll-coreml.md §1.6)

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
const pct = (v: number) => `${(100 * v).toFixed(2)}%`;

function table(head: string[], rows: string[][]): string[] {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ');
  return [line(head), w.map((n) => '-'.repeat(n)).join('  '), ...rows.map(line)];
}

function promptRow(r: ResultRecord, layers: boolean): string[] {
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
  return results.map((g) => `gate ${g.gate.text}: ${g.pass ? 'pass' : 'FAIL'} (${g.gate.metric} = ${fmt(g.actual, 6)})`).join('\n');
}

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
  const row = (name: string, v: string, a: Verdict, b: Verdict, _unused = '') => {
    L.push(`| ${name} | ${v} | ${a} | ${b} |`);
  };
  row('KL(P_ref ‖ P_cand), nats', fmt(s.kl_mean), judge(GUIDANCE.fp16.kl_mean, s.kl_mean), judge(GUIDANCE.quantized.kl_mean, s.kl_mean));
  row(`correlation (${s.correlation_of})`, fmt(s.corr_mean), judge(GUIDANCE.fp16.corr_mean, s.corr_mean), judge(GUIDANCE.quantized.corr_mean, s.corr_mean), '');
  row('top-1 match', pct(s.match_rate), judge(GUIDANCE.fp16.match_rate, s.match_rate), judge(GUIDANCE.quantized.match_rate, s.match_rate), '');
  const e = judge(ENTROPY_BAND, s.entropy_mean);
  row('candidate entropy, nats', fmt(s.entropy_mean), e, e, '');
  row('prompt-phase KL, nats', fmt(s.prompt_kl_mean), 'n/a', 'n/a', '');
  row('KL max over steps', fmt(s.kl_max), 'n/a', 'n/a', '');
  row('reference top-1 margin', fmt(s.margin_mean), 'n/a', 'n/a', '');
  row('prompts diverged', `${s.diverged_prompts} / ${s.count} (earliest step ${s.first_divergence_min ?? '–'})`, 'n/a', 'n/a', '');
  if (layers) {
    const v: Verdict = s.first_layer_below === null ? 'healthy' : 'concerning';
    row(`min per-layer cosine (gate ≥ ${s.layer_threshold})`, fmt(s.min_layer_cosine, 6) + (s.first_layer_below === null ? '' : `, first below at layer ${s.first_layer_below}`), v, v, '');
  }
  L.push('');
  L.push(
    'Guidance (the seed projects): FP16 parity — KL < 0.01 healthy, > 0.1 concerning; correlation > 0.99 / < 0.95; match > 98% / < 90%; ' +
      'entropy > 0.5, collapse risk < 0.1. Quantized models — KL < 0.3 / > 0.5, correlation > 0.95 / < 0.90, match > 85% / < 75%. ' +
      `Per-layer cosine ≥ ${LAYER_COSINE_GATE} (seed 004's gate). Between the two bounds: borderline.`,
    '',
  );
  if (s.gates) {
    L.push('## Gates', '', '| gate | value | result |', '|---|---|---|');
    for (const g of s.gates) L.push(`| \`${g.gate}\` | ${fmt(g.actual, 6)} | ${g.pass ? 'pass' : '**FAIL**'} |`);
    L.push('');
  }
  L.push('## Per prompt', '');
  const head = ['id', 'steps', 'KL', 'corr', 'entropy', 'match', 'first div', 'prompt KL'];
  if (layers) head.push('min layer cos', 'first layer <');
  head.push('repetition');
  L.push(`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`);
  for (const r of results) {
    const rep = [r.repetition.stuck_token ? `stuck token at ${r.repetition.stuck_token.step}` : '', r.repetition.phrase_repeat ? `${r.repetition.phrase_repeat.length}-token phrase ×3 at ${r.repetition.phrase_repeat.step}` : ''].filter(Boolean).join('; ');
    L.push(`| ${[...promptRow(r, layers).map((c) => c.replace(/\|/g, '\\|')), rep || '–'].join(' | ')} |`);
  }
  L.push('');
  if (layers && s.layer_min_cosine) {
    L.push('## Per layer (residual stream leaving the layer; minimum over prompts and positions)', '', '| layer | min cosine | status |', '|---|---|---|');
    s.layer_min_cosine.forEach((c, l) => L.push(`| ${l} | ${fmt(c, 6)} | ${c >= s.layer_threshold! ? 'ok' : '**below**'} |`));
    L.push('');
  }
  L.push(
    '## Definitions',
    '',
    'Per step, in float64 over the full vocabulary at temperature 1: KL(P_ref ‖ P_cand) = Σ p_ref (log p_ref − log p_cand) in nats; ' +
      'Pearson correlation of the raw logit vectors (of log-probabilities clamped at log(1e-45) when a side is llama.cpp, which returns only log-probabilities); ' +
      'entropy of the candidate; top-1 match; top-1 margin of the reference. Step 0 is the prediction after the last prompt token. ' +
      'Prompt KL: mean KL over the prompt positions (predictions of prompt tokens 2..P), both models teacher-forced. ' +
      'Summary means are over all steps pooled (weighted by steps).',
    '',
  );
  return L.join('\n');
}

// ---------------------------------------------------------------------------------------------
// HTML with inline SVG plots (self-contained: no scripts, no external resources)

const esc = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);

function klPlot(r: ResultRecord): string {
  const W = 720, Hh = 160, padL = 52, padR = 10, padT = 10, padB = 22, stripH = 14;
  const kl = r.per_step.kl;
  const n = kl.length;
  const floor = 1e-12;
  const logs = kl.map((v) => Math.log10(Math.max(v, floor)));
  let lo = Math.floor(Math.min(...logs, -3));
  let hi = Math.ceil(Math.max(...logs, -1));
  if (hi - lo < 2) lo = hi - 2;
  const x = (i: number) => padL + (n <= 1 ? 0 : (i / (n - 1)) * (W - padL - padR));
  const y = (lv: number) => padT + ((hi - lv) / (hi - lo)) * (Hh - padT - padB);
  const parts: string[] = [];
  for (let d = lo; d <= hi; d++) {
    parts.push(`<line x1="${padL}" x2="${W - padR}" y1="${y(d)}" y2="${y(d)}" stroke="#eee"/><text x="${padL - 4}" y="${y(d) + 4}" text-anchor="end" font-size="10">1e${d}</text>`);
  }
  for (const [t, c] of [[0.01, '#2a2'], [0.1, '#d22']] as const) {
    const lt = Math.log10(t);
    if (lt >= lo && lt <= hi) parts.push(`<line x1="${padL}" x2="${W - padR}" y1="${y(lt)}" y2="${y(lt)}" stroke="${c}" stroke-dasharray="4 3"/><text x="${W - padR}" y="${y(lt) - 2}" text-anchor="end" font-size="9" fill="${c}">KL ${t}</text>`);
  }
  const pts = logs.map((lv, i) => `${x(i).toFixed(1)},${y(lv).toFixed(1)}`).join(' ');
  parts.push(n === 1 ? `<circle cx="${x(0)}" cy="${y(logs[0])}" r="3" fill="#26c"/>` : `<polyline fill="none" stroke="#26c" stroke-width="1.5" points="${pts}"/>`);
  parts.push(`<text x="${padL}" y="${Hh - 6}" font-size="10">step 0</text><text x="${W - padR}" y="${Hh - 6}" font-size="10" text-anchor="end">step ${n - 1}</text>`);
  // match strip
  const sy = Hh + 4;
  const cw = (W - padL - padR) / Math.max(n, 1);
  r.per_step.match.forEach((m, i) => parts.push(`<rect x="${(padL + i * cw).toFixed(2)}" y="${sy}" width="${Math.max(cw, 0.5).toFixed(2)}" height="${stripH}" fill="${m ? '#4b4' : '#e33'}"><title>step ${i}: ${m ? 'match' : 'mismatch'}</title></rect>`));
  parts.push(`<text x="${padL - 4}" y="${sy + 11}" text-anchor="end" font-size="10">match</text>`);
  if (r.first_divergence !== null) {
    const fx = padL + r.first_divergence * cw;
    parts.push(`<line x1="${fx}" x2="${fx}" y1="${padT}" y2="${sy + stripH}" stroke="#e33" stroke-width="1"/><text x="${fx + 3}" y="${padT + 10}" font-size="10" fill="#e33">first divergence: step ${r.first_divergence}</text>`);
  }
  return `<svg width="${W}" height="${sy + stripH + 4}" role="img" aria-label="per-step KL and match">${parts.join('')}</svg>`;
}

function layerBars(minCos: number[], threshold: number, title: string): string {
  const W = 720, Hh = 180, padL = 60, padR = 10, padT = 18, padB = 22;
  const L = minCos.length;
  const finite = minCos.filter((c) => Number.isFinite(c));
  // Scale so both the threshold and the worst layer are visible with room below them.
  const worst = Math.min(...finite, 1);
  const lo = Math.max(-1, Math.min(threshold - 0.5 * (1 - threshold), worst - 0.2 * (1 - worst)));
  const y = (c: number) => padT + ((1 - c) / (1 - lo)) * (Hh - padT - padB);
  const bw = (W - padL - padR) / L;
  const parts: string[] = [`<text x="${padL}" y="12" font-size="11">${esc(title)}</text>`];
  for (const t of [lo, (lo + 1) / 2, 1]) parts.push(`<line x1="${padL}" x2="${W - padR}" y1="${y(t)}" y2="${y(t)}" stroke="#eee"/><text x="${padL - 4}" y="${y(t) + 4}" text-anchor="end" font-size="10">${t.toFixed(5)}</text>`);
  minCos.forEach((c, l) => {
    const cc = Number.isFinite(c) ? Math.max(c, lo) : lo;
    const ok = c >= threshold;
    parts.push(`<rect x="${(padL + l * bw + 1).toFixed(1)}" y="${y(1).toFixed(1)}" width="${Math.max(bw - 2, 1).toFixed(1)}" height="${(y(cc) - y(1)).toFixed(1)}" fill="${ok ? '#48c' : '#e55'}"><title>layer ${l}: min cosine ${c}</title></rect>`);
    if (L <= 40) parts.push(`<text x="${(padL + (l + 0.5) * bw).toFixed(1)}" y="${Hh - 6}" font-size="9" text-anchor="middle">${l}</text>`);
  });
  if (threshold >= lo) parts.push(`<line x1="${padL}" x2="${W - padR}" y1="${y(threshold)}" y2="${y(threshold)}" stroke="#d22" stroke-dasharray="4 3"/><text x="${W - padR}" y="${y(threshold) - 2}" font-size="9" text-anchor="end" fill="#d22">${threshold}</text>`);
  return `<p style="font-size:12px;color:#555">Bars hang from 1.0 down to the minimum cosine (1 − cos is the bar length); red bars are below ${threshold}.</p><svg width="${W}" height="${Hh}" role="img" aria-label="per-layer cosine">${parts.join('')}</svg>`;
}

function html(results: ResultRecord[], s: SummaryFile): string {
  const md = markdown([], s).split('\n## ').find((sec) => sec.startsWith('Summary')) ?? '';
  const summaryRows = md
    .split('\n')
    .filter((l) => l.startsWith('| ') && !l.startsWith('| metric'))
    .map((l) => `<tr>${l.slice(2, -2).split(' | ').map((c) => `<td>${esc(c)}</td>`).join('')}</tr>`)
    .join('');
  const body: string[] = [];
  body.push(`<h1>lutra compare</h1><p>candidate <code>${esc(s.candidate)}</code> (${esc(s.candidate_engine)}) vs reference <code>${esc(s.reference)}</code> (${esc(s.reference_engine)}); driver: ${esc(s.driver)}; ${s.count} prompt(s), ${s.steps} steps; ${s.seconds.run.toFixed(1)} s.</p>`);
  body.push(`<h2>Summary</h2><table><tr><th>metric</th><th>value</th><th>FP16 parity</th><th>quantized</th></tr>${summaryRows}</table>`);
  if (s.gates) body.push(`<h2>Gates</h2><table><tr><th>gate</th><th>value</th><th>result</th></tr>${s.gates.map((g) => `<tr><td><code>${esc(g.gate)}</code></td><td>${fmt(g.actual, 6)}</td><td style="color:${g.pass ? '#282' : '#c22'}">${g.pass ? 'pass' : 'FAIL'}</td></tr>`).join('')}</table>`);
  if (s.layer_min_cosine) body.push('<h2>Per-layer cosine (all prompts)</h2>' + layerBars(s.layer_min_cosine, s.layer_threshold!, `minimum cosine per layer over ${s.count} prompt(s)`));
  body.push('<h2>Per prompt</h2><p style="font-size:12px;color:#555">KL(P_ref ‖ P_cand) per step on a log scale (dashed: 0.01 and 0.1); the strip below is top-1 match per step (green match, red mismatch).</p>');
  for (const r of results) {
    const m = r.metrics;
    body.push(
      `<h3>${esc(r.id)}</h3><p class="meta">${r.prompt !== null ? `<b>prompt</b> ${esc(r.prompt.slice(0, 300))}<br>` : ''}` +
        `${m.steps} steps · KL ${fmt(m.kl_mean)} · corr ${fmt(m.corr_mean)} · entropy ${fmt(m.entropy_mean)} · match ${pct(m.match_rate)} · first divergence ${m.first_divergence ?? '–'} · prompt KL ${fmt(m.prompt_kl)}</p>`,
    );
    body.push(klPlot(r));
    if (r.layers) body.push(layerBars(r.layers.min_cosine, r.layers.threshold, `per-layer minimum cosine, ${r.id}`));
    if (r.generated_text !== null) body.push(`<details><summary>generated text</summary><pre>${esc(r.generated_text)}</pre></details>`);
  }
  return `<!doctype html><html><head><meta charset="utf-8"><title>lutra compare</title><style>
body{font-family:system-ui,sans-serif;margin:24px;max-width:800px;color:#222}table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
.meta{font-size:12px;color:#444}pre{white-space:pre-wrap;font-size:12px;background:#f6f6f6;padding:8px}svg{display:block;margin:6px 0}
</style></head><body>${body.join('\n')}</body></html>\n`;
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
    ['report.html', html(results, summary)],
  ];
  for (const [name, text] of files) writeFileAtomic(join(dir, name), text);
  return files.map(([n]) => join(dir, n));
}
