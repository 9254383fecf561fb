// The structure of the HTML reports (compare's report.html, audit-fp16 --plot): where the verdicts
// sit, that thresholds are labelled in words, and that the page is not held to a narrow width.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeOutputs, type ResultRecord, type SummaryFile } from '../src/verify/report.js';
import { auditHtml, AUDIT_POINTS, type AuditResult } from '../src/fp16/audit.js';

const root = mkdtempSync(join(tmpdir(), 'lutra-report-'));
test.after(() => rmSync(root, { recursive: true, force: true }));

function record(id: string, kl: number[], match: number[]): ResultRecord {
  const steps = kl.length;
  const fd = match.indexOf(0);
  return {
    id,
    fields: {},
    prompt: `prompt of ${id} <b>`,
    ids: [2, 10, 11],
    generated_ids: kl.map((_, i) => 20 + i),
    generated_text: 'some text',
    driver: 'candidate',
    steps,
    first_divergence: fd < 0 ? null : fd,
    metrics: {
      steps, kl_mean: kl.reduce((a, b) => a + b) / steps, kl_max: Math.max(...kl), corr_mean: 0.995, entropy_mean: 2.1,
      match_rate: match.reduce((a, b) => a + b) / steps, margin_mean: 1.5, prompt_kl: 1e-4, first_divergence: fd < 0 ? null : fd,
      min_layer_cosine: 0.9951, first_layer_below: 2,
    },
    repetition: { stuck_token: null, phrase_repeat: null },
    layers: { min_cosine: [0.9999, 0.998, 0.9951, 0.9972], mean_cosine: [1, 0.999, 0.998, 0.999], worst_position: [0, 1, 2, 3], rel_error: [0.01, 0.05, 0.1, 0.07], first_below: 2, threshold: 0.997, single: null },
    per_step: { kl, corr: kl.map(() => 0.995), entropy: kl.map(() => 2.1), match, margin: kl.map(() => 1.5), ref_top: kl.map(() => 5), cand_top: kl.map(() => 5) },
    prompt_kl: [1e-4],
    seconds: { driver: 0.1, teacher: 0.1, metrics: 0.1 },
  };
}

function summary(gates: SummaryFile['gates']): SummaryFile {
  return {
    count: 2, steps: 8, kl_mean: 0.02, kl_max: 0.2, corr_mean: 0.995, entropy_mean: 2.1, match_rate: 0.875, margin_mean: 1.5, prompt_kl_mean: 1e-4,
    diverged_prompts: 1, first_divergence_min: 2, repetition_flagged_prompts: 0,
    min_layer_cosine: 0.9951, layer_min_cosine: [0.9999, 0.998, 0.9951, 0.9972], first_layer_below: 2, layer_threshold: 0.997,
    candidate: 'cand', reference: 'ref', candidate_engine: 'lutra, wasm backend', reference_engine: 'lutra, wasm backend', driver: 'candidate',
    max_tokens: 4, template: true, stop_at_eos: false, correlation_of: 'logits', seconds: { load: 1, run: 2, total: 3 },
    gates,
  };
}

/** The inner HTML of <section id="ID">. */
function section(html: string, id: string): string {
  const m = html.match(new RegExp(`<section id="${id}">([\\s\\S]*?)</section>`));
  assert.ok(m, `no <section id="${id}">`);
  return m[1];
}

/** What a reader sees: tags dropped, entities decoded, spaces collapsed. */
const text = (html: string) =>
  html
    .replace(/<[^>]+>/g, ' ')
    .replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&amp;/g, '&')
    .replace(/\s+/g, ' ');

test('report.html: gate verdicts in the Gates section, guidance verdicts with their bands in the Summary', () => {
  const out = join(root, 'gated');
  const results = [record('first', [0.001, 0.02, 0.2, 0.005], [1, 1, 0, 1]), record('second', [1e-5, 1e-4, 1e-3, 1e-2], [1, 1, 1, 1])];
  writeOutputs(out, results, summary([
    { gate: 'kl<0.01', actual: 0.02, pass: false },
    { gate: 'match>0.8', actual: 0.875, pass: true },
  ]));
  const html = readFileSync(join(out, 'report.html'), 'utf8');

  const gates = section(html, 'gates');
  assert.match(gates, /<h2>Gates<\/h2>/);
  const gateRows = gates.match(/<tr>[\s\S]*?<\/tr>/g)!.slice(1).map(text);
  assert.equal(gateRows.length, 3);
  assert.match(gateRows[0], /kl<0\.01 0\.020000 FAIL/);
  assert.match(gateRows[1], /match>0\.8 0\.875000 pass/);
  // The --layers threshold is a reported check, said to be one, under Gates.
  assert.match(gateRows[2], /per-layer cosine ≥ 0\.997 0\.995100 \(layer 2 first below\) FAIL \(reported; add it to --gate to enforce\)/);

  const sum = section(html, 'summary');
  assert.match(sum, /<h2>Summary<\/h2>/);
  assert.doesNotMatch(text(sum), /\b(pass|FAIL)\b/, 'gate verdicts belong under Gates');
  // Each guidance verdict comes with its band, in words.
  const klRow = text(sum.match(/<tr><td>KL\(P_ref[\s\S]*?<\/tr>/)![0]);
  assert.match(klRow, /0\.0200 borderline < 0\.01 healthy, > 0\.1 concerning healthy < 0\.3 healthy, > 0\.5 concerning/);
  const layerRow = text(sum.match(/<tr><td>min per-layer cosine[\s\S]*?<\/tr>/)![0]);
  assert.match(layerRow, /0\.995100, first below 0\.997 at layer 2 – –/);

  // Threshold lines are labelled in words, in the plots' margin.
  const labels = [...html.matchAll(/<text class="threshold-label"[^>]*>([^<]*)<\/text>/g)].map((m) => m[1]);
  assert.ok(labels.includes('KL 0.01 (healthy below)'), labels.join(' | '));
  assert.ok(labels.includes('KL 0.1 (concerning above)'), labels.join(' | '));
  assert.ok(labels.includes('threshold 0.997'), labels.join(' | '));
  // One KL plot per prompt, the all-prompts layer chart and one per prompt.
  assert.equal((html.match(/aria-label="per-step KL and match"/g) ?? []).length, 2);
  assert.equal((html.match(/aria-label="per-layer cosine"/g) ?? []).length, 3);
  // The order of the page: summary, gates, layers, prompts.
  const at = (id: string) => html.indexOf(`<section id="${id}">`);
  assert.ok(at('summary') < at('gates') && at('gates') < at('layers') && at('layers') < at('prompts'));
  // Text from the run is escaped.
  assert.match(html, /prompt of first &lt;b&gt;/);

  // Full width: no fixed narrow page or plot width.
  const style = html.match(/<style>([\s\S]*?)<\/style>/)![1];
  assert.doesNotMatch(style, /max-width\s*:\s*\d+px/);
  for (const svg of html.match(/<svg[^>]*>/g)!) {
    assert.match(svg, /width="100%"/);
    assert.match(svg, /viewBox="0 0 \d+ \d+"/);
  }

  const md = readFileSync(join(out, 'report.md'), 'utf8');
  const mdGates = md.slice(md.indexOf('## Gates'), md.indexOf('## Per prompt'));
  assert.match(mdGates, /\| `kl<0\.01` \| 0\.020000 \| \*\*FAIL\*\* \|/);
  assert.match(mdGates, /\| `per-layer cosine ≥ 0\.997` \| .* \| \*\*FAIL\*\* \(reported, not enforced\) \|/);
  const mdSummary = md.slice(md.indexOf('## Summary'), md.indexOf('## Gates'));
  assert.match(mdSummary, /\| min per-layer cosine \| 0\.995100, first below 0\.997 at layer 2 \| – \| – \|/);
  assert.doesNotMatch(mdSummary, /seed/);
});

test('report.html: a layer gate given with --gate is not listed twice; without gates the section says how to add them', () => {
  const out = join(root, 'layergate');
  writeOutputs(out, [record('p', [0.001, 0.002], [1, 1])], summary([{ gate: 'layer>=0.997', actual: 0.9951, pass: false }]));
  const gates = section(readFileSync(join(out, 'report.html'), 'utf8'), 'gates');
  assert.equal((gates.match(/<tr>/g) ?? []).length, 2);
  assert.match(text(gates), /layer>=0\.997 0\.995100 FAIL/);

  const bare = join(root, 'bare');
  const s = summary(undefined);
  delete s.min_layer_cosine;
  delete s.layer_min_cosine;
  delete s.first_layer_below;
  delete s.layer_threshold;
  const r = record('p', [0.001, 0.002], [1, 1]);
  r.layers = null;
  writeOutputs(bare, [r], s);
  const html = readFileSync(join(bare, 'report.html'), 'utf8');
  assert.match(text(section(html, 'gates')), /No gates were given \(--gate "kl<0\.01,corr>0\.99,match>0\.98" checks thresholds/);
  assert.ok(!html.includes('<section id="layers">'));
});

test('audit-fp16 plot: a full-width chart, a legend entry per activation point, the fp16 limit labelled', () => {
  const r: AuditResult = {
    embedPeak: 3,
    layers: [0, 1, 2].map((layer) => ({ layer, peaks: Object.fromEntries(AUDIT_POINTS.map((p, i) => [p, 10 ** (layer + 1) + i])) })),
    residualPeak: 1006,
    firstOverflow: null,
    alpha: 1,
    positions: 12,
  };
  const html = auditHtml(r, 'fp16 audit: models/demo <x>');
  assert.match(html, /^<!doctype html><html><head><meta charset="utf-8">/);
  assert.match(html, /<title>fp16 audit: models\/demo &lt;x&gt;<\/title>/);
  assert.doesNotMatch(html, /max-width\s*:\s*\d+px/);
  assert.match(html.match(/<svg[^>]*>/)![0], /width="100%"/);
  const legend = [...html.matchAll(/<text class="legend"[^>]*>([^<]*)<\/text>/g)].map((m) => m[1]);
  assert.deepEqual(legend, AUDIT_POINTS);
  assert.match(html, /<text class="threshold-label"[^>]*>fp16 max 65504<\/text>/);
  assert.match(html, /no activation exceeds the fp16 maximum 65504; recommended α = 1 \(12 positions\)/);
});
