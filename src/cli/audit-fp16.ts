import type { Command } from './common.js';
import { modelLabel, openModel } from './model-flags.js';
import { F32_NUMERICS } from '../fp16/numerics.js';
import { readDataset } from '../verify/dataset.js';
import { auditFp16, auditHtml, AUDIT_POINTS, FP16_MAX, ALPHA_TARGET, CALIBRATION_PROMPT, CALIBRATION_STEPS } from '../fp16/audit.js';
import { LutraError } from '../util/errors.js';
import { checkParentDir, writeFileAtomic } from '../util/atomic-output.js';

export const auditFp16Command: Command = {
  name: 'audit-fp16',
  summary: 'find where the model would overflow fp16 (per-layer activation peaks) and recommend α',
  usage: 'lutra audit-fp16 [--model SRC] [--prompt TEXT | --dataset FILE] [--generate N] [--json FILE] [--plot FILE.html]',
  options: {
    model: { type: 'string', short: 'm', arg: 'SRC', help: 'model folder: a Hugging Face checkpoint or a lutra package', default: 'models/demo' },
    backend: { type: 'string', arg: 'NAME', help: 'compute backend: wasm or reference', default: 'wasm' },
    threads: { type: 'string', short: 't', arg: 'N', help: 'worker threads for the wasm backend', default: 'available cores' },
    prompt: { type: 'string', short: 'p', arg: 'TEXT', help: 'calibration prompt (chat template applied)', default: 'a built-in paragraph prompt' },
    dataset: { type: 'string', arg: 'FILE', help: 'calibration prompts, JSONL or plain lines (as lutra compare)' },
    generate: { type: 'string', arg: 'N', help: 'also audit N greedy steps after each prompt', default: String(CALIBRATION_STEPS) },
    raw: { type: 'boolean', help: 'no chat template' },
    json: { type: 'string', arg: 'FILE', help: 'also write the result as JSON' },
    plot: { type: 'string', arg: 'FILE', help: 'write an HTML page with the per-layer peaks against the fp16 limit' },
  },
  notes: `One f32 pass over each prompt and its greedy continuation. Peaks are |values| at: ${AUDIT_POINTS.join(', ')}.\nα = ${ALPHA_TARGET} / peak residual, rounded down to a multiple of 1/64 (1 when the peak is below ${ALPHA_TARGET}).`,
  run(flags) {
    if (flags.has('prompt') && flags.has('dataset')) throw new LutraError('lutra audit-fp16: give --prompt or --dataset, not both');
    const { model, tokenizer, dir } = openModel(flags, { numerics: F32_NUMERICS });
    const texts = flags.has('dataset') ? readDataset(flags.string('dataset')).map((p) => p.prompt) : [flags.string('prompt', CALIBRATION_PROMPT)];
    const prompts = texts.map((t) => (flags.bool('raw') || !tokenizer.hasChatTemplate ? tokenizer.encode(t) : tokenizer.encodeChat([{ role: 'user', content: t }])));
    for (const f of ['json', 'plot']) if (flags.has(f)) checkParentDir(flags.string(f), `--${f} ${flags.string(f)}`); // before the slow part
    const t0 = performance.now();
    const r = auditFp16(model, prompts, { generate: flags.number('generate', CALIBRATION_STEPS, { integer: true, min: 0 }) });
    model.backend.dispose?.();
    const f = (v: number) => (v >= 1e4 || (v < 1e-2 && v > 0) ? v.toExponential(2) : v.toFixed(2)).padStart(10);
    const head = ['layer', ...AUDIT_POINTS].map((h, i) => (i === 0 ? h.padEnd(6) : h.padStart(13))).join('');
    const rows = r.layers.map((l) => `${String(l.layer).padEnd(6)}${AUDIT_POINTS.map((p) => `  ${f(l.peaks[p])}${l.peaks[p] > FP16_MAX ? '!' : ' '}`).join('')}`);
    process.stdout.write(
      [
        `fp16 audit of ${modelLabel(dir)}: ${prompts.length} prompt(s), ${r.positions} positions, ${((performance.now() - t0) / 1000).toFixed(1)} s`,
        `embedding output peak ${f(r.embedPeak).trim()}`,
        head,
        ...rows,
        `peak residual ${r.residualPeak.toExponential(3)} (fp16 max ${FP16_MAX}; ! marks a peak above it)`,
        r.firstOverflow
          ? `first overflow: layer ${r.firstOverflow.layer} ${r.firstOverflow.point} (${r.firstOverflow.peak.toExponential(3)})`
          : 'no activation exceeds the fp16 maximum',
        `recommended α = ${r.alpha}${r.alpha === 1 ? ' (no scaling needed)' : ` (= floor(64 × ${ALPHA_TARGET} / ${r.residualPeak.toExponential(3)}) / 64)`}`,
        '',
      ].join('\n'),
    );
    const result = { model: dir, fp16_max: FP16_MAX, alpha_target: ALPHA_TARGET, ...r };
    if (flags.has('json')) writeFileAtomic(flags.string('json'), JSON.stringify(result, null, 2) + '\n');
    if (flags.has('plot')) writeFileAtomic(flags.string('plot'), auditHtml(r, `fp16 audit: ${modelLabel(dir)}`));
  },
};
