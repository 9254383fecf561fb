// `lutra diff BASE OTHER` / `lutra diff BASE --lora DIR`: what a fine-tune changed, per layer and
// matrix, as text (or JSON) and an HTML heatmap.
import type { Command } from './common.js';
import { PROMPT_OPTIONS, hasPrompt, readPrompt } from './prompt.js';
import { loraFlags, modelLabel, threadsFlag } from './model-flags.js';
import { makeBackend } from '../runtime/load.js';
import { diffModels, type DiffReport } from '../analysis/diff.js';
import { diffHtml } from '../analysis/diff-html.js';
import { checkParentDir, writeFileAtomic } from '../util/atomic-output.js';
import { GemmaTokenizer } from '../tokenizer/tokenizer.js';
import { LutraError } from '../util/errors.js';
import { tensorProgress } from './progress.js';

/** Prompts the residual streams are compared on when none is given: both styles of text and a question. */
const DEFAULT_PROMPTS = [
  'And God said, Let there be light: and there was light.',
  'A fool and his money are soon parted.',
  'What is the best way to learn a new language?',
];

export const diffCommand: Command = {
  name: 'diff',
  summary: 'what a fine-tune changed: ‖ΔW‖/‖W‖, singular values and effective rank per matrix, residual cosine per layer (HTML heatmap)',
  positionals: true,
  usage: 'lutra diff BASE (OTHER | --lora DIR[:W] ...) [-p TEXT | --prompt-file FILE] [--out FILE.html] [--json] [--top K]',
  options: {
    lora: { type: 'string', multiple: true, arg: 'DIR[:W]', help: 'compare BASE with BASE plus this LoRA adapter (repeat to blend) instead of a second model' },
    ...PROMPT_OPTIONS,
    out: { type: 'string', short: 'o', arg: 'FILE', help: 'write the HTML report here', default: 'diff.html' },
    json: { type: 'boolean', help: 'print the report as JSON on stdout' },
    top: { type: 'string', arg: 'K', help: 'singular values kept per matrix', default: '16' },
    backend: { type: 'string', arg: 'NAME', help: 'backend the residual streams are computed on: wasm or reference', default: 'wasm' },
    threads: { type: 'string', short: 't', arg: 'N', help: 'threads for the wasm backend', default: 'available cores' },
  },
  notes:
    'OTHER is a checkpoint or package with the same architecture and shapes (a full fine-tune); with --lora,\n' +
    'ΔW is the adapters\' Σ w·(alpha/r)·B·A. Every attention and feed-forward matrix is compared, dequantized to\n' +
    'f32. Singular values come from ΔW in float64; effective rank = exp(entropy of σᵢ/Σσ). The residual cosine\n' +
    'is measured after every layer on the prompt (default: three built-in prompts), at every position.',
  run(flags, positionals) {
    const lora = loraFlags(flags);
    if (positionals.length < 1 || positionals.length > 2) throw new LutraError('lutra diff: expected BASE and OTHER model paths, or BASE with --lora DIR');
    const [base, other] = positionals;
    if ((other === undefined) === (lora.length === 0)) throw new LutraError(other === undefined ? 'lutra diff: give OTHER (a second model) or --lora DIR' : 'lutra diff: give OTHER or --lora, not both');
    const top = flags.number('top', 16, { integer: true, min: 1, max: 4096 });
    const backendName = flags.string('backend', 'wasm');
    const threads = threadsFlag(flags);
    makeBackend(backendName, { threads }).dispose?.(); // a bad --backend or --out fails before the slow part
    const out = flags.string('out', 'diff.html');
    checkParentDir(out, `--out ${out}`);
    const tokenizer = GemmaTokenizer.load(base);
    const texts = hasPrompt(flags) ? [readPrompt(flags, 'diff')] : DEFAULT_PROMPTS;
    const prompts = texts.map((t) => tokenizer.encode(t, { bos: true }));
    const progress: { bar: ReturnType<typeof tensorProgress> | null } = { bar: null };
    let report: DiffReport;
    try {
      report = diffModels(base, {
        other: other ?? null,
        lora,
        prompts,
        top,
        backend: () => makeBackend(backendName, { threads }),
        onProgress: flags.bool('json') ? undefined : (i, n) => (progress.bar ??= tensorProgress('diff', n)).update(i, ''),
      });
    } finally {
      progress.bar?.stop();
    }
    writeFileAtomic(out, diffHtml(report));
    if (flags.bool('json')) process.stdout.write(JSON.stringify(report) + '\n');
    else process.stdout.write(render(report, modelLabel(base)) + `\nwrote ${out}\n`);
  },
};

function render(r: DiffReport, base: string): string {
  const w = Math.max(...r.modules.map((m) => m.length), 9);
  const lines = [`${base} → ${r.other}: ‖ΔW‖/‖W‖ per layer and matrix (effective rank)`, '       ' + r.modules.map((m) => m.padStart(w + 8)).join('')];
  for (const l of r.layers) {
    const cells = r.modules.map((mod) => {
      const m = r.matrices.find((x) => x.layer === l.layer && x.module === mod);
      return (m ? `${m.relNorm.toExponential(2)} (${m.effectiveRank.toFixed(1)})` : '–').padStart(w + 8);
    });
    const cos = l.cosineMean === null ? '' : `  residual cos ${l.cosineMean.toFixed(6)} (least ${l.cosineMin!.toFixed(6)})`;
    lines.push(`layer ${String(l.layer).padStart(2)}${cells.join('')}  layer ${l.relNorm.toExponential(2)}${cos}`);
  }
  lines.push(`layers moved most: ${r.mostMoved.slice(0, 5).join(', ')}`);
  return lines.join('\n');
}
