// FP16 overflow audit: one f32 pass that records, per layer, the peak |value| at every point
// where an fp16 accelerator would hold an activation, and recommends the residual scale α.
import type { CausalLM, ActivationPoint, Observer } from '../model/forward.js';
import { top2 } from '../verify/metrics.js';
import { Session } from '../runtime/session.js';

import { FP16_MAX } from './round.js';
export { FP16_MAX };
/** α targets this peak, leaving headroom under FP16_MAX for prompts the audit did not see. */
export const ALPHA_TARGET = 50000;

/** Greedy steps audited after each calibration prompt by default: decode positions peak too. */
export const CALIBRATION_STEPS = 128;

/** Default calibration prompt: long enough to exercise several positions. */
export const CALIBRATION_PROMPT = 'Explain, step by step and at length, how a river carves a canyon over millions of years.';

/** Points reported per layer, in forward order. */
export const AUDIT_POINTS: ActivationPoint[] = ['attn_out', 'attn_post', 'residual_mid', 'mlp_act', 'ffn_out', 'ffn_post', 'residual'];

export interface LayerPeaks {
  layer: number;
  /** Peak |x| per point over all audited positions. */
  peaks: Record<string, number>;
}

export interface AuditResult {
  embedPeak: number;
  layers: LayerPeaks[];
  /** Peak of the residual stream (embedding and every layer's mid and final residual). */
  residualPeak: number;
  /** First (layer, point) whose peak exceeds FP16_MAX, or null. */
  firstOverflow: { layer: number; point: string; peak: number } | null;
  /** ALPHA_TARGET / residualPeak rounded down to a multiple of 1/64, capped at 1. */
  alpha: number;
  positions: number;
}

export function recommendAlpha(residualPeak: number): number {
  if (residualPeak <= ALPHA_TARGET) return 1;
  return Math.max(1, Math.floor((ALPHA_TARGET / residualPeak) * 64)) / 64;
}

function peakOf(data: Float32Array, n: number): number {
  let m = 0;
  for (let i = 0; i < n; i++) {
    const a = Math.abs(data[i]);
    if (a > m || a !== a) m = a !== a ? Infinity : a;
  }
  return m;
}

/**
 * Run every prompt (token ids) through a fresh session, then `generate` greedy steps after it
 * (decode positions peak too), and gather the peaks.
 */
export function auditFp16(model: CausalLM, prompts: number[][], opts: { generate?: number } = {}): AuditResult {
  const L = model.cfg.numLayers;
  const layers: LayerPeaks[] = Array.from({ length: L }, (_, layer) => ({ layer, peaks: Object.fromEntries(AUDIT_POINTS.map((p) => [p, 0])) }));
  let embedPeak = 0;
  let positions = 0;
  const observer: Observer = (layer, point, data, rows, cols) => {
    const p = peakOf(data, rows * cols);
    if (point === 'embed') embedPeak = Math.max(embedPeak, p);
    else if (point in layers[layer].peaks) layers[layer].peaks[point] = Math.max(layers[layer].peaks[point], p);
  };
  for (const ids of prompts) {
    const steps = Math.max(0, Math.min(opts.generate ?? 0, model.cfg.maxPositions - ids.length));
    const session = new Session(model, { contextLength: Math.min(model.cfg.maxPositions, Math.max(ids.length + steps, 1)) });
    let logits = session.prefill(ids, { observer });
    for (let k = 0; k < steps; k++) logits = session.step(top2(logits).top, observer);
    positions += ids.length + steps;
  }
  let residualPeak = embedPeak;
  let firstOverflow: AuditResult['firstOverflow'] = embedPeak > FP16_MAX ? { layer: 0, point: 'embed', peak: embedPeak } : null;
  for (const l of layers) {
    residualPeak = Math.max(residualPeak, l.peaks.residual_mid, l.peaks.residual);
    if (!firstOverflow) {
      for (const p of AUDIT_POINTS) {
        if (l.peaks[p] > FP16_MAX) {
          firstOverflow = { layer: l.layer, point: p, peak: l.peaks[p] };
          break;
        }
      }
    }
  }
  return { embedPeak, layers, residualPeak, firstOverflow, alpha: recommendAlpha(residualPeak), positions };
}

/**
 * A self-contained HTML page with an SVG chart of the per-layer peaks against the fp16 limit: a
 * log scale, one line per activation point with a legend, the fp16 maximum as a labelled dashed
 * line. The chart scales to the page width.
 */
export function auditHtml(r: AuditResult, title: string): string {
  const W = 1200;
  const H = 460;
  const pad = { l: 64, r: 150, t: 44, b: 48 };
  const all = r.layers.flatMap((l) => AUDIT_POINTS.map((p) => l.peaks[p])).concat([r.embedPeak, FP16_MAX]);
  const lo = Math.max(1e-3, Math.min(...all.filter((v) => v > 0)));
  const hi = Math.max(...all.filter(Number.isFinite)) * 3;
  const x1 = W - pad.r;
  const x = (layer: number) => pad.l + ((x1 - pad.l) * (layer + 0.5)) / r.layers.length;
  const y = (v: number) => pad.t + (H - pad.t - pad.b) * (1 - (Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo)));
  const colors: Record<string, string> = { residual: '#000', residual_mid: '#777', attn_out: '#d62728', attn_post: '#e377c2', mlp_act: '#2ca02c', ffn_out: '#1f77b4', ffn_post: '#17becf' };
  const lines = AUDIT_POINTS.map((p) => {
    const pts = r.layers.map((l) => `${x(l.layer).toFixed(1)},${y(l.peaks[p]).toFixed(1)}`).join(' ');
    return `<polyline fill="none" stroke="${colors[p]}" stroke-width="2" points="${pts}"><title>${p}</title></polyline>`;
  }).join('');
  // The legend is one row above the plot, clear of the lines and of the threshold label.
  const legend = AUDIT_POINTS.map((p, i) => {
    const lx = pad.l + 140 * i;
    return `<line x1="${lx}" x2="${lx + 24}" y1="16" y2="16" stroke="${colors[p]}" stroke-width="3"/><text class="legend" x="${lx + 30}" y="20" font-size="13" fill="#222">${p}</text>`;
  }).join('');
  const limit =
    `<line class="threshold" x1="${pad.l}" x2="${x1}" y1="${y(FP16_MAX)}" y2="${y(FP16_MAX)}" stroke="#d22" stroke-width="1.5" stroke-dasharray="6 4"/>` +
    `<text class="threshold-label" x="${x1 + 8}" y="${y(FP16_MAX) + 4}" fill="#d22" font-size="13">fp16 max 65504</text>`;
  const ticks = [];
  for (let e = Math.ceil(Math.log10(lo)); e <= Math.log10(hi); e++) ticks.push(`<text x="${pad.l - 6}" y="${y(10 ** e) + 4}" text-anchor="end" font-size="12">1e${e}</text><line x1="${pad.l}" x2="${x1}" y1="${y(10 ** e)}" y2="${y(10 ** e)}" stroke="#eee"/>`);
  const xt = r.layers.map((l) => `<text x="${x(l.layer)}" y="${H - pad.b + 18}" text-anchor="middle" font-size="12">${l.layer}</text>`).join('');
  const esc = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
  const verdict = r.firstOverflow
    ? `first overflow: layer ${r.firstOverflow.layer} ${r.firstOverflow.point} (${r.firstOverflow.peak.toExponential(3)})`
    : 'no activation exceeds the fp16 maximum 65504';
  return `<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>${esc(title)}</title>
<style>body{font-family:system-ui,sans-serif;margin:24px 32px;color:#222}p{font-size:14px}.note{font-size:13px;color:#555}svg{display:block}</style></head><body>
<h1>${esc(title)}</h1>
<p>peak residual ${r.residualPeak.toExponential(3)}; ${verdict}; recommended α = ${r.alpha} (${r.positions} positions)</p>
<p class="note">Peak |activation| per layer on a log scale, at each point where an fp16 accelerator would hold a value; the dashed line is the largest finite fp16 value.</p>
<svg viewBox="0 0 ${W} ${H}" width="100%" preserveAspectRatio="xMinYMin meet" role="img" aria-label="per-layer activation peaks" font-family="system-ui,sans-serif">${ticks.join('')}${limit}${lines}${legend}${xt}<text x="${(x1 + pad.l) / 2}" y="${H - 8}" text-anchor="middle" font-size="13">layer</text></svg>
</body></html>
`;
}
