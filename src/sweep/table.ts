// The sweep's outputs: sweep.md (the table) and sweep.json (every row in full), each written under
// a temporary name and renamed (src/util/atomic-output.ts), so a reader never sees half a file.
import { mkdirSync } from 'node:fs';
import { writeFileAtomic } from '../util/atomic-output.js';
import { join } from 'node:path';
import type { SweepResult, SweepRow } from './sweep.js';

function num(v: number | null | undefined, digits: number): string {
  if (v === null || v === undefined || Number.isNaN(v)) return '–';
  if (v === 0) return '0';
  if (Math.abs(v) < 10 ** -digits) return v.toExponential(2);
  return v.toFixed(digits);
}

/** Earliest first divergence over prompts, with how many prompts diverged at all. */
function firstDiv(r: SweepRow): string {
  const s = r.summary;
  if (!s) return '–';
  return `${s.first_divergence_min ?? 'none'} (${s.diverged_prompts}/${s.count})`;
}

export const TABLE_HEAD = ['configuration', 'size MB', 'KL', 'corr', 'match', 'first div (prompts)', 'min layer cos (at layer)', 'min single-layer cos (at layer)', 'decode tok/s'];

/** A per-layer minimum and the layer where it is lowest, e.g. "0.9912 (7)". */
function minAt(min: number | undefined, perLayer: number[] | undefined): string {
  if (min === undefined) return '–';
  const at = perLayer ? perLayer.indexOf(min) : -1;
  return `${num(min, 4)}${at >= 0 ? ` (${at})` : ''}`;
}

export function tableCells(r: SweepRow): string[] {
  const s = r.summary;
  return [
    r.name,
    num(r.size_mb, 2),
    num(s?.kl_mean, 4),
    num(s?.corr_mean, 4),
    s ? `${(100 * s.match_rate).toFixed(1)}%` : '–',
    firstDiv(r),
    minAt(s?.min_layer_cosine, s?.layer_min_cosine),
    minAt(s?.min_single_layer_cosine, s?.layer_single_min_cosine),
    num(r.decode_tok_s, 0),
  ];
}

export function formatMarkdown(res: SweepResult): string {
  const esc = (c: string) => c.replace(/\|/g, '\\|');
  const lines = [
    `| ${TABLE_HEAD.join(' | ')} |`,
    `|${TABLE_HEAD.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`,
    ...res.rows.map((r) => `| ${tableCells(r).map(esc).join(' | ')} |`),
  ];
  const notes = [
    '',
    `Source ${res.model}; reference: the source on ${res.reference_engine}. ${res.prompts} prompts × ${res.max_tokens} greedy steps, ` +
      `the candidate drives and the reference is teacher-forced; ${res.template ? 'chat template' : 'no template'}; candidates on the ${res.backend} backend.`,
    'KL(P_ref ‖ P_cand) in nats, logit correlation and top-1 match pooled over all steps; first div = earliest step whose top-1 differs ' +
      '(prompts that diverged / all); min layer cos = lowest cosine of the residual stream after any layer at any position, and the layer where it is lowest; ' +
      "single-layer = the same with each candidate layer run on the reference's input (the error a layer adds on its own)" +
      (res.layers ? '' : ' (not measured: run with --layers)') + '; size = bytes of the weight shards (MB = 10^6 bytes).',
    res.timing
      ? `decode tok/s: timeLutra, prefill ${res.timing.prefill} + decode ${res.timing.decode} tokens, best of ≤ 3 runs on the ${res.backend} backend (machine shared: expect noise).`
      : 'decode tok/s: not measured (--no-timing).',
  ];
  const rowNotes = res.rows.flatMap((r) => {
    const parts = [`\`${r.name}\`: ${r.convert || '(source formats)'}`, `numerics ${r.numerics}`];
    if (r.alpha !== null && (r.alpha !== 1 || r.convert.includes('--fp16-scale'))) parts.push(`α = ${r.alpha} (${r.alpha_chosen_by})`);
    if (r.activations) parts.push(`activations ${r.activations}`);
    if (r.error) parts.push(`**failed**: ${r.error}`);
    return [`- ${parts.join('; ')}`];
  });
  return [...lines, ...notes, '', ...rowNotes, ''].join('\n');
}

/** A plain-text table for stderr/stdout. */
export function formatText(res: SweepResult): string {
  const rows = res.rows.map((r) => [...tableCells(r), r.error ? `FAILED: ${r.error}` : '']);
  const head = [...TABLE_HEAD, ''];
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (i === head.length - 1 ? 0 : r[i].length))));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(w[i]) : i === r.length - 1 ? c : c.padStart(w[i]))).join('  ').trimEnd();
  return [line(head), w.map((n) => '-'.repeat(n)).join('  ').trimEnd(), ...rows.map(line)].join('\n');
}

/** Writes DIR/sweep.md and DIR/sweep.json; returns their paths. */
export function writeSweepOutputs(dir: string, res: SweepResult, extra: Record<string, unknown> = {}): string[] {
  mkdirSync(dir, { recursive: true });
  const md = join(dir, 'sweep.md');
  const json = join(dir, 'sweep.json');
  writeFileAtomic(md, formatMarkdown(res));
  writeFileAtomic(json, JSON.stringify({ ...extra, ...res }, null, 1) + '\n');
  return [md, json];
}
