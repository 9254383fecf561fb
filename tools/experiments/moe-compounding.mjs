#!/usr/bin/env node
// The compounding claim tested on a `lutra sweep --layers` result: does the error at the top of the
// stack follow (1 + δ)^N from the per-layer errors δ?
//
// Per configuration, from sweep.json's summaries (means over prompts and positions):
//   δ_l  = single-layer relative error of layer l (the layer on the reference's input)
//   E_l  = through-the-stack relative error after layer l (measured)
// and three predictions of E at the last layer: Π(1 + δ_l) − 1 (multiplicative compounding),
// Σ δ_l (errors adding in one direction) and sqrt(Σ δ_l²) (independent errors). The seed-style
// figure takes δ = 1 − (min single-layer cosine) for every layer, as a plan would from one audit.
//
// usage: node tools/experiments/moe-compounding.mjs SWEEP_DIR/sweep.json
import { readFileSync } from 'node:fs';

const file = process.argv[2];
if (!file) {
  process.stderr.write('usage: node tools/experiments/moe-compounding.mjs SWEEP_DIR/sweep.json\n');
  process.exit(2);
}
const res = JSON.parse(readFileSync(file, 'utf8'));
const f = (x, d = 3) => (Number.isFinite(x) ? x.toPrecision(d) : '–');
const lines = [
  '| configuration | min single-layer cos (layer) | min cos through the stack (layer) | mean δ_l | E measured (last layer) | Π(1+δ_l)−1 | Σδ_l | √Σδ_l² | (1 + (1−min single cos))^N − 1 |',
  '|---|---|---|---|---|---|---|---|---|',
];
for (const r of res.rows) {
  const s = r.summary;
  if (!s?.layer_single_rel_error) {
    lines.push(`| ${r.name} | ${r.error ? `failed: ${r.error}` : 'no single-layer data (run with --layers)'} |`);
    continue;
  }
  const d = s.layer_single_rel_error;
  const N = d.length;
  const E = s.layer_rel_error[N - 1];
  const prod = d.reduce((p, x) => p * (1 + x), 1) - 1;
  const sum = d.reduce((a, x) => a + x, 0);
  const rss = Math.sqrt(d.reduce((a, x) => a + x * x, 0));
  const minS = s.min_single_layer_cosine;
  const seed = (1 + (1 - minS)) ** N - 1;
  const at = (v, arr) => `${f(v, 5)} (${arr.indexOf(v)})`;
  lines.push(`| ${r.name} | ${at(minS, s.layer_single_min_cosine)} | ${at(s.min_layer_cosine, s.layer_min_cosine)} | ${f(sum / N)} | ${f(E)} | ${f(prod)} | ${f(sum)} | ${f(rss)} | ${f(seed)} |`);
}
process.stdout.write(lines.join('\n') + '\n');
