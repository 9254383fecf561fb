import type { Command } from './common.js';
import YAML from 'yaml';
import { inspectModel, type InspectReport } from '../verify/inspect.js';
import { LutraError } from '../util/errors.js';

const mib = (n: number) => `${(n / 2 ** 20).toFixed(2)} MiB`;

function render(r: InspectReport): string {
  const lines = [`${r.path} (${r.kind})`, YAML.stringify(r.meta, { lineWidth: 0 }).trimEnd(), ''];
  const cmp = r.against !== undefined;
  const head = ['tensor', 'format', 'shape', 'bytes', ...(cmp ? ['rel_rms', 'cosine', 'cond', 'cond_ch (row)'] : [])];
  const rows = r.tensors.map((t) => [
    t.name,
    t.ggml ? `${t.format} (${t.ggml})` : t.format,
    `[${t.shape.join(', ')}]`,
    String(t.bytes),
    ...(cmp
      ? t.rel_rms === undefined
        ? [t.note ?? '', '', '', '']
        : [t.rel_rms.toExponential(3), t.cosine!.toFixed(6), t.condition!.toFixed(1), `${t.condition_worst_channel!.toFixed(1)} (${t.worst_channel})`]
      : []),
  ]);
  const width = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  for (const row of [head, ...rows]) lines.push(row.map((c, i) => (i === 0 ? c.padEnd(width[i]) : c.padStart(width[i]))).join('  '));
  const s = r.summary;
  let sum = `${s.tensors} tensors, ${mib(s.total_bytes)}`;
  if (cmp) {
    sum += ` (source ${mib(s.source_bytes!)})`;
    sum += s.worst_tensor ? `; worst tensor ${s.worst_tensor}: rel RMS ${s.worst_rel_rms!.toExponential(3)}; lowest cosine ${s.min_cosine!.toFixed(6)}` : '; no tensor compared';
    sum += ` against ${r.against}`;
  }
  lines.push('', sum);
  return lines.join('\n');
}

export const inspectCommand: Command = {
  name: 'inspect',
  summary: 'show what a package, checkpoint or GGUF holds; with --against, each tensor\'s quantization error',
  positionals: true,
  usage: 'lutra inspect PACKAGE|CHECKPOINT|GGUF [--against SRC] [--json]',
  options: {
    against: { type: 'string', arg: 'SRC', help: 'source model (checkpoint, package or GGUF) to measure each tensor against' },
    json: { type: 'boolean', help: 'print the report as JSON' },
  },
  notes:
    'rel_rms = ‖W − S‖/‖S‖ and cosine between the dequantized tensor W and the source S. cond = max|S|/RMS(S)\n' +
    'for the source tensor, cond_ch the largest per-output-channel figure (and its row): large values mean\n' +
    'outliers dominate a per-tensor scale or table. Bytes are as stored (codes + scales/tables).',
  run(flags, positionals) {
    if (positionals.length !== 1) throw new LutraError('lutra inspect: expected one model path (package folder, checkpoint folder or .gguf file)');
    const report = inspectModel(positionals[0], flags.optionalString('against'));
    process.stdout.write((flags.bool('json') ? JSON.stringify(report, null, 1) : render(report)) + '\n');
  },
};
