// The LoRA quantization study (docs/EXPERIMENTS.md, "LoRA: merge then quantize, or quantize the base
// and keep the adapter"): on the demo model and its shipped adapter, for each weight format, two ways
// to ship the fine-tune —
//   merged:   convert --lora ADAPTER --quant all=FORMAT  (the adapter folded into the weights, then quantized)
//   unmerged: convert --quant all=FORMAT, run with --lora ADAPTER (quantized base, the adapter applied in f32)
// — each measured against the f32 base + adapter (the demo's bf16 weights, f32 activations, adapter
// unmerged): the divergence harness (lutra compare: KL, top-1 match) on prompts of both styles, the
// held-out loss of each style (how much of the adapter's effect survives), the bytes shipped and
// the decode speed. Run after npm run build:
//   node tools/experiments/lora-study.mjs [--formats int8:32,int4:32,lut4:4,lut6:4] [--steps 48] [--work DIR]
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js');
const DEMO = join(ROOT, 'models', 'demo');
const ADAPTER = join(ROOT, 'models', 'demo-lora');
const { values: o } = parseArgs({
  options: {
    formats: { type: 'string', default: 'int8:32,int4:32,lut4:4,lut6:4' },
    steps: { type: 'string', default: '48' },
    prompts: { type: 'string', default: '12' },
    work: { type: 'string' },
    'bench-rounds': { type: 'string', default: '3' },
  },
  strict: true,
});
const say = (m) => process.stderr.write(`lora-study: ${m}\n`);
if (!existsSync(CLI)) throw new Error('run npm run build first');
const work = o.work ?? mkdtempSync(join(tmpdir(), 'lutra-lora-study-'));
if (!o.work) process.on('exit', () => rmSync(work, { recursive: true, force: true }));
mkdirSync(work, { recursive: true });
const { loadModel } = await import(pathToFileURL(join(ROOT, 'dist', 'src', 'index.js')).href);

function lutra(args) {
  say(`$ lutra ${args.join(' ')}`);
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.status !== 0 && !(args[0] === 'compare' && r.status === 1)) throw new Error(`lutra ${args[0]} failed (${r.status}):\n${r.stderr}`);
  return r.stdout;
}

// Prompts of both styles: the first words of held-out documents (never trained on).
const styles = ['fortunes', 'bible'];
const heldout = Object.fromEntries(styles.map((s) => [s, readFileSync(join(ADAPTER, `heldout-${s}.txt`), 'utf8')]));
const perStyle = Math.ceil(Number(o.prompts) / 2);
const dataset = join(work, 'prompts.jsonl');
writeFileSync(
  dataset,
  styles
    .flatMap((s) =>
      heldout[s]
        .split('\n\n')
        .filter((d) => d.split(/\s+/).length >= 8)
        .slice(0, perStyle)
        .map((d, i) => JSON.stringify({ id: `${s}-${i}`, prompt: d.split(/\s+/).slice(0, 6).join(' ') })),
    )
    .join('\n') + '\n',
);

/** Mean held-out loss per style (nats/token; windows of [<bos>] + 511 tokens, as the demo's eval contract). */
async function heldoutLoss(path, lora) {
  const m = await loadModel(path, { lora, threads: 2 });
  try {
    const out = {};
    for (const s of styles) {
      const ids = m.tokenize(heldout[s], { bos: false });
      let nll = 0;
      let n = 0;
      for (let i = 0; i < ids.length; i += 511) {
        const w = ids.slice(i, i + 511);
        if (w.length < 64) break;
        const r = await m.logProbs([2, ...w], { bos: false });
        nll += r.nll;
        n += w.length;
      }
      out[s] = nll / n;
    }
    return out;
  } finally {
    m.dispose();
  }
}

function bytesOf(dir) {
  return readdirSync(dir).filter((f) => f.endsWith('.safetensors')).reduce((b, f) => b + statSync(join(dir, f)).size, 0);
}

function decodeSpeed(model, lora) {
  const rates = [];
  for (let r = 0; r < Number(o['bench-rounds']); r++) {
    const args = ['bench', '--model', model, '--prefill', '64', '--decode', '64', '--repeat', '1', '--probe-mib', '16', '--json'];
    rates.push(JSON.parse(lutra(lora ? [...args, '--lora', lora] : args)).decode_tok_s);
  }
  return rates.sort((a, b) => a - b)[Math.floor(rates.length / 2)];
}

function harness(candidate, candLora, name) {
  const out = join(work, `cmp-${name}`);
  const args = ['compare', candidate, '--reference', DEMO, '--reference-lora', ADAPTER, '--reference-activations', 'f32', '--dataset', dataset, '-n', o.steps, '--no-template', '--out-dir', out, '--threads', '2'];
  lutra(candLora ? [...args, '--candidate-lora', candLora] : args);
  return JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8'));
}

const rows = [];
say('reference: f32 base + adapter; and the base alone');
const ref = await heldoutLoss(DEMO, [ADAPTER]);
const baseLoss = await heldoutLoss(DEMO, undefined);
const adapterBytes = bytesOf(ADAPTER);
const base = harness(DEMO, null, 'base');
rows.push({ name: 'base, no adapter (bf16)', kl: base.kl_mean, match: base.match_rate, loss: baseLoss, bytes: bytesOf(DEMO), speed: decodeSpeed(DEMO, null) });
rows.push({ name: 'base bf16 + adapter (the reference)', kl: 0, match: 1, loss: ref, bytes: bytesOf(DEMO) + adapterBytes, speed: decodeSpeed(DEMO, ADAPTER) });
for (const fmt of o.formats.split(',')) {
  const tag = fmt.replace(':', '-');
  const merged = join(work, `merged-${tag}`);
  const quant = join(work, `base-${tag}`);
  if (!existsSync(merged)) lutra(['convert', '--model', DEMO, '--out', merged, '--quant', `all=${fmt}`, '--lora', ADAPTER]);
  if (!existsSync(quant)) lutra(['convert', '--model', DEMO, '--out', quant, '--quant', `all=${fmt}`]);
  const m = harness(merged, null, `merged-${tag}`);
  rows.push({ name: `${fmt}: merge, then quantize`, kl: m.kl_mean, match: m.match_rate, loss: await heldoutLoss(merged, undefined), bytes: bytesOf(merged), speed: decodeSpeed(merged, null) });
  const u = harness(quant, ADAPTER, `unmerged-${tag}`);
  rows.push({ name: `${fmt}: quantized base + adapter (f32, unmerged)`, kl: u.kl_mean, match: u.match_rate, loss: await heldoutLoss(quant, [ADAPTER]), bytes: bytesOf(quant) + adapterBytes, speed: decodeSpeed(quant, ADAPTER) });
}

const effect = ref.fortunes - baseLoss.fortunes; // negative: the adapter lowers the loss of its style
const f = (x, d = 4) => (x === null || x === undefined ? '–' : x.toFixed(d));
const lines = [
  `Reference: models/demo (bf16) + models/demo-lora unmerged, f32 activations. Harness: ${readFileSync(dataset, 'utf8').trim().split('\n').length} prompts (first words of held-out fortunes and KJV chapters, no template), ${o.steps} greedy steps each, candidate-driven.`,
  `Held-out loss: nats/token on models/demo-lora/heldout-{fortunes,bible}.txt; the adapter moves fortunes ${f(baseLoss.fortunes)} → ${f(ref.fortunes)} (${f(effect, 4)}), bible ${f(baseLoss.bible)} → ${f(ref.bible)}.`,
  'Effect retained = (base loss − variant loss) / (base loss − reference loss) on the fortunes.',
  '',
  '| variant | KL vs reference | top-1 match | loss fortunes | loss bible | effect retained | MB shipped | decode tok/s |',
  '|---|---|---|---|---|---|---|---|',
  ...rows.map((r) => `| ${r.name} | ${f(r.kl, 5)} | ${(100 * r.match).toFixed(1)}% | ${f(r.loss.fortunes)} | ${f(r.loss.bible)} | ${((100 * (baseLoss.fortunes - r.loss.fortunes)) / (baseLoss.fortunes - ref.fortunes)).toFixed(0)}% | ${(r.bytes / 2 ** 20).toFixed(2)} | ${r.speed.toFixed(0)} |`),
];
process.stdout.write(lines.join('\n') + '\n');
