// The attention report as one self-contained HTML page: a summary of local versus global layers, then
// per layer a row of heatmaps (query down, key across; brightness √p), the sliding window's edge drawn
// on local layers, each head's entropy, <bos> mass and mean distance under its map.
import type { AttentionReport } from './attention.js';

const esc = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);

export function attentionHtml(r: AttentionReport, title: string, tokens: string[]): string {
  const T = r.tokens;
  const layers = r.layers.map((l) => ({
    layer: l.layer,
    sliding: l.sliding,
    window: l.window,
    heads: l.heads,
    // √p in 0..255: weak attention stays visible.
    maps: l.maps.map((m) => Buffer.from(Uint8Array.from(m, (p) => Math.round(255 * Math.sqrt(p)))).toString('base64')),
  }));
  const f = (x: number | undefined, d = 3) => (x === undefined ? '–' : x.toFixed(d));
  const s = r.summary;
  const rowOf = (name: string, v: typeof s.sliding) =>
    v ? `<tr><td>${name}</td><td>${f(v.entropy)}</td><td>${f(v.sinkMass)}</td><td>${f(v.meanDistance, 1)}</td></tr>` : '';
  const data = JSON.stringify({ T, layers, tokens }).replace(/</g, '\\u003c');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 16px; background: #fff; color: #111; }
h1 { font-size: 18px; } table { border-collapse: collapse; margin: 8px 0 16px; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; } td:first-child { text-align: left; }
.layer { margin: 12px 0; } .layer h2 { font-size: 15px; margin: 4px 0; }
.heads { display: flex; flex-wrap: wrap; gap: 10px; } .head { font-size: 12px; }
canvas { width: 200px; height: 200px; image-rendering: pixelated; border: 1px solid #999; display: block; }
.tokens { font-family: monospace; font-size: 12px; color: #444; max-width: 900px; word-break: break-all; }
</style></head><body>
<h1>${esc(title)}</h1>
<p>${T} tokens. Each map: query position down, key position across, brightness √p. Sliding layers show the window's edge in red: nothing lies left of it.</p>
<table><tr><th>layers</th><th>entropy (nats)</th><th>mass on &lt;bos&gt;</th><th>mean distance</th></tr>
${rowOf('sliding (local)', s.sliding)}${rowOf('global', s.global)}</table>
<p class="tokens">${tokens.map(esc).join(' · ')}</p>
<div id="layers"></div>
<script>
const R = ${data};
const root = document.getElementById('layers');
for (const L of R.layers) {
  const div = document.createElement('div');
  div.className = 'layer';
  div.innerHTML = '<h2>layer ' + L.layer + (L.sliding ? ' — sliding, window ' + L.window : ' — global') + '</h2><div class="heads"></div>';
  const heads = div.querySelector('.heads');
  L.maps.forEach((b64, h) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const c = document.createElement('canvas');
    c.width = R.T; c.height = R.T;
    const g = c.getContext('2d');
    const img = g.createImageData(R.T, R.T);
    for (let i = 0; i < bytes.length; i++) {
      const v = bytes[i];
      img.data[4 * i] = 255 - v; img.data[4 * i + 1] = 255 - v; img.data[4 * i + 2] = 255 - Math.round(v / 3); img.data[4 * i + 3] = 255;
    }
    g.putImageData(img, 0, 0);
    if (L.sliding && L.window < R.T) {
      g.strokeStyle = 'rgba(220,0,0,0.9)'; g.lineWidth = 1; g.beginPath();
      g.moveTo(0, L.window - 1); g.lineTo(R.T - L.window + 1, R.T); g.stroke();
    }
    const st = L.heads[h];
    const box = document.createElement('div');
    box.className = 'head';
    box.appendChild(c);
    box.appendChild(document.createTextNode('head ' + h + ': H ' + st.entropy.toFixed(2) + ', bos ' + st.sinkMass.toFixed(2) + ', dist ' + st.meanDistance.toFixed(1)));
    heads.appendChild(box);
  });
  root.appendChild(div);
}
</script></body></html>
`;
}
