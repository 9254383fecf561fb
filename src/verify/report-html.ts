// report.html of `lutra compare`: the summary judged against the guidance (each verdict with the band
// it was judged by), the gates, and per prompt the KL curve, the top-1 match strip and the per-layer
// cosine bars as inline SVG. Self-contained (no scripts, no external resources); the plots scale to
// the page width.
import type { ResultRecord, SummaryFile, Judged } from './report.js';
import { fmt, gateRows, pct, summaryRows, GUIDANCE_TEXT, DEFINITIONS_TEXT } from './report.js';

const esc = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);

/** Plot width in SVG units; the SVG is drawn at 100% of the page width. */
const W = 1200;
/** Right margin of the plots, where the threshold lines are labelled. */
const LABEL_W = 200;

function svg(height: number, label: string, parts: string[]): string {
  return `<svg viewBox="0 0 ${W} ${height}" width="100%" preserveAspectRatio="xMinYMin meet" role="img" aria-label="${esc(label)}" font-family="system-ui,sans-serif">${parts.join('')}</svg>`;
}

/** A dashed horizontal threshold line across the plot, labelled in the right margin. */
function thresholdLine(x0: number, x1: number, y: number, color: string, label: string): string {
  return (
    `<line class="threshold" x1="${x0}" x2="${x1}" y1="${y.toFixed(1)}" y2="${y.toFixed(1)}" stroke="${color}" stroke-width="1.5" stroke-dasharray="6 4"/>` +
    `<text class="threshold-label" x="${x1 + 8}" y="${(y + 4).toFixed(1)}" font-size="13" fill="${color}">${esc(label)}</text>`
  );
}

function klPlot(r: ResultRecord): string {
  const Hh = 200, padL = 56, padR = LABEL_W, padT = 12, padB = 24, stripH = 16;
  const kl = r.per_step.kl;
  const n = kl.length;
  const floor = 1e-12;
  const logs = kl.map((v) => Math.log10(Math.max(v, floor)));
  let lo = Math.floor(Math.min(...logs, -3));
  const hi = Math.ceil(Math.max(...logs, -1));
  if (hi - lo < 2) lo = hi - 2;
  const x1 = W - padR;
  const x = (i: number) => padL + (n <= 1 ? 0 : (i / (n - 1)) * (x1 - padL));
  const y = (lv: number) => padT + ((hi - lv) / (hi - lo)) * (Hh - padT - padB);
  const parts: string[] = [];
  for (let d = lo; d <= hi; d++) {
    parts.push(`<line x1="${padL}" x2="${x1}" y1="${y(d)}" y2="${y(d)}" stroke="#eee"/><text x="${padL - 6}" y="${y(d) + 4}" text-anchor="end" font-size="12">1e${d}</text>`);
  }
  for (const [t, c, what] of [[0.01, '#2a2', 'healthy below'], [0.1, '#d22', 'concerning above']] as const) {
    const lt = Math.log10(t);
    if (lt >= lo && lt <= hi) parts.push(thresholdLine(padL, x1, y(lt), c, `KL ${t} (${what})`));
  }
  const pts = logs.map((lv, i) => `${x(i).toFixed(1)},${y(lv).toFixed(1)}`).join(' ');
  parts.push(n === 1 ? `<circle cx="${x(0)}" cy="${y(logs[0])}" r="3" fill="#26c"/>` : `<polyline fill="none" stroke="#26c" stroke-width="1.5" points="${pts}"/>`);
  parts.push(`<text x="${padL}" y="${Hh - 6}" font-size="12">step 0</text><text x="${x1}" y="${Hh - 6}" font-size="12" text-anchor="end">step ${n - 1}</text>`);
  // top-1 match strip
  const sy = Hh + 4;
  const cw = (x1 - padL) / Math.max(n, 1);
  r.per_step.match.forEach((m, i) => parts.push(`<rect x="${(padL + i * cw).toFixed(2)}" y="${sy}" width="${Math.max(cw, 0.5).toFixed(2)}" height="${stripH}" fill="${m ? '#4b4' : '#e33'}"><title>step ${i}: ${m ? 'match' : 'mismatch'}</title></rect>`));
  parts.push(`<text x="${padL - 6}" y="${sy + 12}" text-anchor="end" font-size="12">match</text>`);
  parts.push(`<text x="${x1 + 8}" y="${sy + 12}" font-size="13" fill="#444">top-1 match per step</text>`);
  if (r.first_divergence !== null) {
    const fx = padL + r.first_divergence * cw;
    parts.push(`<line x1="${fx}" x2="${fx}" y1="${padT}" y2="${sy + stripH}" stroke="#e33" stroke-width="1"/><text x="${fx + 4}" y="${padT + 12}" font-size="12" fill="#e33">first divergence: step ${r.first_divergence}</text>`);
  }
  return svg(sy + stripH + 4, 'per-step KL and match', parts);
}

function layerBars(minCos: number[], threshold: number, title: string): string {
  const Hh = 220, padL = 72, padR = LABEL_W, padT = 24, padB = 24;
  const L = minCos.length;
  const finite = minCos.filter((c) => Number.isFinite(c));
  // Scale so both the threshold and the worst layer are visible with room below them.
  const worst = Math.min(...finite, 1);
  const lo = Math.max(-1, Math.min(threshold - 0.5 * (1 - threshold), worst - 0.2 * (1 - worst)));
  const x1 = W - padR;
  const y = (c: number) => padT + ((1 - c) / (1 - lo)) * (Hh - padT - padB);
  const bw = (x1 - padL) / L;
  const parts: string[] = [`<text x="${padL}" y="15" font-size="13">${esc(title)}</text>`];
  for (const t of [lo, (lo + 1) / 2, 1]) parts.push(`<line x1="${padL}" x2="${x1}" y1="${y(t)}" y2="${y(t)}" stroke="#eee"/><text x="${padL - 6}" y="${y(t) + 4}" text-anchor="end" font-size="12">${t.toFixed(5)}</text>`);
  minCos.forEach((c, l) => {
    const cc = Number.isFinite(c) ? Math.max(c, lo) : lo;
    const ok = c >= threshold;
    parts.push(`<rect x="${(padL + l * bw + 1).toFixed(1)}" y="${y(1).toFixed(1)}" width="${Math.max(bw - 2, 1).toFixed(1)}" height="${(y(cc) - y(1)).toFixed(1)}" fill="${ok ? '#48c' : '#e55'}"><title>layer ${l}: min cosine ${c}</title></rect>`);
    if (L <= 64) parts.push(`<text x="${(padL + (l + 0.5) * bw).toFixed(1)}" y="${Hh - 6}" font-size="11" text-anchor="middle">${l}</text>`);
  });
  if (threshold >= lo) parts.push(thresholdLine(padL, x1, y(threshold), '#d22', `threshold ${threshold}`));
  return (
    `<p class="note">Bars hang from 1.0 down to each layer's minimum cosine (the bar length is 1 − cos); red bars are below the threshold ${threshold}.</p>` +
    svg(Hh, 'per-layer cosine', parts)
  );
}

function verdictCell(j: Judged | null): string {
  if (!j) return '<td class="verdict none">–</td>';
  return `<td class="verdict ${j.verdict.replace('/', '')}">${j.verdict}<div class="band">${esc(j.band)}</div></td>`;
}

function summarySection(s: SummaryFile): string {
  const rows = summaryRows(s)
    .map((r) => `<tr><td>${esc(r.metric)}</td><td class="num">${esc(r.value)}</td>${verdictCell(r.fp16)}${verdictCell(r.quantized)}</tr>`)
    .join('');
  return (
    '<section id="summary"><h2>Summary</h2><p class="note">Means over all steps. Each verdict is followed by the band it was judged against.</p>' +
    `<table><tr><th>metric</th><th>value</th><th>FP16 parity</th><th>quantized</th></tr>${rows}</table>` +
    `<p class="note">Guidance: ${esc(GUIDANCE_TEXT)}</p></section>`
  );
}

function gatesSection(s: SummaryFile): string {
  const rows = gateRows(s);
  const body = rows.length
    ? '<table><tr><th>gate</th><th>value</th><th>result</th></tr>' +
      rows
        .map((g) => `<tr><td><code>${esc(g.gate)}</code></td><td class="num">${esc(g.value)}</td><td class="gate-result ${g.pass ? 'pass' : 'fail'}">${g.pass ? 'pass' : 'FAIL'}${g.enforced ? '' : ' <span class="band">(reported; add it to --gate to enforce)</span>'}</td></tr>`)
        .join('') +
      '</table>'
    : '<p class="note">No gates were given (--gate "kl&lt;0.01,corr&gt;0.99,match&gt;0.98" checks thresholds and sets the exit status).</p>';
  return `<section id="gates"><h2>Gates</h2>${body}</section>`;
}

function promptSection(r: ResultRecord): string {
  const m = r.metrics;
  const parts = [
    `<h3>${esc(r.id)}</h3><p class="meta">${r.prompt !== null ? `<b>prompt</b> ${esc(r.prompt.slice(0, 300))}<br>` : ''}` +
      `${m.steps} steps · KL ${fmt(m.kl_mean)} · corr ${fmt(m.corr_mean)} · entropy ${fmt(m.entropy_mean)} · match ${pct(m.match_rate)} · first divergence ${m.first_divergence ?? '–'} · prompt KL ${fmt(m.prompt_kl)}</p>`,
    klPlot(r),
  ];
  if (r.layers) parts.push(layerBars(r.layers.min_cosine, r.layers.threshold, `per-layer minimum cosine, ${r.id}`));
  if (r.generated_text !== null) parts.push(`<details><summary>generated text</summary><pre>${esc(r.generated_text)}</pre></details>`);
  return parts.join('\n');
}

const STYLE = `body{font-family:system-ui,sans-serif;margin:24px 32px;color:#222}
table{border-collapse:collapse;font-size:14px}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left;vertical-align:top}
td.num{font-variant-numeric:tabular-nums}
.verdict.healthy{color:#1a7f1a}.verdict.borderline{color:#a66b00}.verdict.concerning{color:#c22}.verdict.na,.verdict.none{color:#888}
.gate-result.pass{color:#1a7f1a;font-weight:600}.gate-result.fail{color:#c22;font-weight:600}
.band{font-size:12px;color:#666;font-weight:normal}
.note,.meta{font-size:13px;color:#555}pre{white-space:pre-wrap;font-size:13px;background:#f6f6f6;padding:8px}svg{display:block;margin:6px 0}`;

export function reportHtml(results: ResultRecord[], s: SummaryFile): string {
  const body: string[] = [];
  body.push(
    `<h1>lutra compare</h1><p>candidate <code>${esc(s.candidate)}</code> (${esc(s.candidate_engine)}) vs reference <code>${esc(s.reference)}</code> (${esc(s.reference_engine)}); ` +
      `driver: ${esc(s.driver)}; ${s.count} prompt(s), ${s.steps} steps (max ${s.max_tokens} per prompt), chat template ${s.template ? 'on' : 'off'}; ` +
      `run ${s.seconds.run.toFixed(1)} s, load ${s.seconds.load.toFixed(1)} s.</p>`,
  );
  body.push(summarySection(s));
  body.push(gatesSection(s));
  if (s.layer_min_cosine) {
    body.push('<section id="layers"><h2>Per-layer cosine (all prompts)</h2>' + layerBars(s.layer_min_cosine, s.layer_threshold!, `minimum cosine per layer over ${s.count} prompt(s)`) + '</section>');
  }
  body.push(
    '<section id="prompts"><h2>Per prompt</h2><p class="note">KL(P_ref ‖ P_cand) per step on a log scale, with dashed lines at the FP16-parity bounds 0.01 and 0.1; ' +
      'the strip below is top-1 match per step (green match, red mismatch).</p>' +
      results.map(promptSection).join('\n') +
      '</section>',
  );
  body.push(`<section id="definitions"><h2>Definitions</h2><p class="note">${esc(DEFINITIONS_TEXT)}</p></section>`);
  return `<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>lutra compare</title><style>
${STYLE}
</style></head><body>${body.join('\n')}</body></html>\n`;
}
