// The diff report as one self-contained HTML page: a layer × module heatmap of ‖ΔW‖/‖W‖ (each cell's
// effective rank and top singular values in its tooltip), then per layer the aggregate change and the
// residual-stream cosine between the two models.
import type { DiffReport } from './diff.js';

const esc = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);

/** White (no change) to deep red (the largest change of the report). */
function heat(x: number, max: number): string {
  const t = max > 0 ? Math.min(1, x / max) : 0;
  const g = Math.round(255 * (1 - 0.85 * t));
  return `rgb(255,${g},${Math.round(g * 0.9)})`;
}

export function diffHtml(r: DiffReport): string {
  const max = Math.max(0, ...r.matrices.map((m) => m.relNorm));
  const byLayer = new Map<number, Map<string, DiffReport['matrices'][number]>>();
  for (const m of r.matrices) {
    if (!byLayer.has(m.layer)) byLayer.set(m.layer, new Map());
    byLayer.get(m.layer)!.set(m.module, m);
  }
  const f = (x: number | null, d = 4) => (x === null ? '–' : x < 1e-3 && x > 0 ? x.toExponential(2) : x.toFixed(d));
  const cells = [...byLayer.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([layer, mods]) => {
      const tds = r.modules.map((mod) => {
        const m = mods.get(mod);
        if (!m) return '<td class="none">–</td>';
        const tip = `${m.name}\n‖ΔW‖/‖W‖ ${m.relNorm.toExponential(3)}\neffective rank ${m.effectiveRank.toFixed(2)}, 99% of ‖ΔW‖² in ${m.rank99}\nσ: ${m.singular.slice(0, 8).map((s) => s.toExponential(2)).join(' ')}`;
        return `<td data-layer="${layer}" data-module="${esc(mod)}" data-rel="${m.relNorm}" style="background:${heat(m.relNorm, max)}" title="${esc(tip)}">${f(m.relNorm)}<br><small>rank ${m.effectiveRank.toFixed(1)}</small></td>`;
      });
      return `<tr><th>layer ${layer}</th>${tds.join('')}</tr>`;
    })
    .join('\n');
  const layerRows = r.layers
    .map((l) => `<tr><td>${l.layer}</td><td>${f(l.relNorm)}</td><td>${r.mostMoved.indexOf(l.layer) + 1}</td><td>${f(l.cosineMean, 6)}</td><td>${f(l.cosineMin, 6)}</td></tr>`)
    .join('\n');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lutra diff: ${esc(r.base)} → ${esc(r.other)}</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 16px; color: #111; background: #fff; }
h1 { font-size: 18px; } h2 { font-size: 15px; margin-top: 20px; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th { white-space: nowrap; } #heatmap td { min-width: 80px; text-align: center; font-variant-numeric: tabular-nums; } small { color: #444; }
</style></head><body>
<h1>lutra diff: ${esc(r.base)} → ${esc(r.other)}</h1>
<p>Layers moved most (by ‖ΔW‖/‖W‖ over their matrices): <b id="most">${r.mostMoved.slice(0, 5).join(', ')}</b>.
Cells: ‖ΔW‖<sub>F</sub>/‖W‖<sub>F</sub> and the effective rank of ΔW (exp of the entropy of its normalised singular values); hover for the singular values.</p>
<h2>Change per layer and matrix</h2>
<table id="heatmap"><tr><th></th>${r.modules.map((m) => `<th>${esc(m)}</th>`).join('')}</tr>
${cells}
</table>
<h2>Per layer</h2>
<table id="layers"><tr><th>layer</th><th>‖ΔW‖/‖W‖</th><th>moved (1 = most)</th><th>residual cosine, mean${r.prompts ? ` (${r.prompts} prompts)` : ''}</th><th>least</th></tr>
${layerRows}
</table>
</body></html>
`;
}
