// `lutra sweep`: the quantization quality study. The work is in src/sweep/; this file
// reads the flags, shows progress on stderr and writes the table.
import cliProgress from 'cli-progress';
import type { Command, Flags } from './common.js';
import { LutraError } from '../util/errors.js';
import { readDataset } from '../verify/dataset.js';
import { readSweepConfigs } from '../sweep/config.js';
import { runSweep, type SweepEvent, type SweepResult } from '../sweep/sweep.js';
import { formatText, writeSweepOutputs } from '../sweep/table.js';
import { onInterrupt } from '../util/atomic-output.js';

export const sweepCommand: Command = {
  name: 'sweep',
  summary: 'quantization study: convert under each configuration, compare against the f32 source, time decode, one table',
  positionals: true,
  usage: 'lutra sweep --model SRC --configs FILE.yaml --dataset FILE.jsonl --out-dir DIR [--max-tokens 64] [--layers] [--backend wasm]',
  options: {
    model: { type: 'string', short: 'm', arg: 'SRC', help: 'source model (checkpoint or package): converted under every configuration, and the reference run in f32 math', default: 'models/demo' },
    configs: { type: 'string', arg: 'FILE', help: 'YAML list of {name, quant: [PART=FORMAT, ...] or lut1/lut2/lut3: B,G, fp16-scale?: auto|α, numerics?: f32|fp16} (required)' },
    dataset: { type: 'string', arg: 'FILE', help: 'JSONL prompts, as lutra compare --dataset (required)' },
    'out-dir': { type: 'string', arg: 'DIR', help: 'writes sweep.md and sweep.json here (after every configuration; required)' },
    'max-tokens': { type: 'string', short: 'n', arg: 'N', help: 'greedy steps per prompt', default: '64' },
    layers: { type: 'boolean', help: 'per-layer cosine of the residual stream, through the stack and each layer on the reference\'s input (the "min layer cos" columns)' },
    backend: { type: 'string', arg: 'NAME', help: 'compute backend for candidates and the reference', default: 'wasm' },
    'no-template': { type: 'boolean', help: 'tokenize prompts as plain text after <bos>, without the chat template' },
    'prefill-batch': { type: 'string', arg: 'N', help: 'tokens per prefill batch', default: '64' },
    'bench-prefill': { type: 'string', arg: 'N', help: 'prompt tokens for the decode timing', default: '64' },
    'bench-decode': { type: 'string', arg: 'N', help: 'decoded tokens for the decode timing', default: '64' },
    threads: { type: 'string', short: 't', arg: 'N', help: 'threads for the timing (wasm)', default: 'available cores' },
    'no-timing': { type: 'boolean', help: 'skip the decode timing' },
    'keep-packages': { type: 'boolean', help: 'keep the converted packages in DIR/packages/NAME' },
  },
  notes:
    'Each configuration is converted in-process (like lutra convert), compared against the source with the driver = candidate\n' +
    '(like lutra compare --candidate-backend B --reference-backend B), then timed (lutra bench\'s timeLutra). A configuration that\n' +
    'fails is reported in its row, the sweep goes on, and it exits with status 1 when any configuration failed.\n' +
    'Sizes are the bytes of the package\'s weight shards (MB = 10^6 bytes).',
  async run(flags: Flags, positionals: string[]) {
    if (positionals.length) throw new LutraError(`lutra sweep: unexpected argument ${positionals[0]}`);
    const t0 = performance.now();
    const configsPath = flags.string('configs');
    const datasetPath = flags.string('dataset');
    const outDir = flags.string('out-dir');
    const configs = readSweepConfigs(configsPath);
    const prompts = readDataset(datasetPath);
    const maxTokens = flags.number('max-tokens', 64, { integer: true, min: 1 });
    const timing = flags.bool('no-timing')
      ? null
      : {
          prefill: flags.number('bench-prefill', 64, { integer: true, min: 1 }),
          decode: flags.number('bench-decode', 64, { integer: true, min: 1 }),
          threads: flags.has('threads') ? flags.number('threads', 1, { integer: true, min: 1 }) : undefined,
        };
    const command = ['lutra', ...process.argv.slice(2)].map((a) => (/^[\w./:=,@+-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
    const extra = { command, configs_file: configsPath, dataset: datasetPath };
    const progress = sweepProgress(configs.length, prompts.length);
    let result: SweepResult;
    try {
      result = await runSweep({
        model: flags.model(), configs, prompts, outDir, maxTokens,
        backend: flags.string('backend', 'wasm'),
        layers: flags.bool('layers'),
        template: !flags.bool('no-template'),
        prefillBatch: flags.number('prefill-batch', 64, { integer: true, min: 1 }),
        timing,
        keepPackages: flags.bool('keep-packages'),
        onEvent: progress.event,
        // Partial outputs after every row, so an interrupted sweep keeps what it measured.
        onRow: (rows) => writeSweepOutputs(outDir, { ...partial(rows), seconds: (performance.now() - t0) / 1000 }, { ...extra, complete: false }),
      });
    } finally {
      progress.stop();
    }
    const files = writeSweepOutputs(outDir, result, { ...extra, complete: true });
    process.stdout.write(formatText(result) + '\n');
    const failed = result.rows.filter((r) => r.error).length;
    process.stderr.write(`${result.rows.length} configurations (${failed} with errors) in ${result.seconds.toFixed(1)} s; wrote ${files.join(', ')}\n`);
    if (failed > 0) {
      process.stderr.write(`lutra sweep: ${failed} of ${result.rows.length} configurations failed (${result.rows.filter((r) => r.error).map((r) => r.name).join(', ')}); see their rows\n`);
      return 1;
    }

    function partial(rows: SweepResult['rows']): SweepResult {
      return { model: flags.model(), reference_engine: '(in progress)', backend: flags.string('backend', 'wasm'), max_tokens: maxTokens, layers: flags.bool('layers'), template: !flags.bool('no-template'), prompts: prompts.length, timing, rows, seconds: 0 };
    }
  },
};

/** One bar over configurations × (convert + prompts + timing) on a terminal; one line per configuration otherwise. */
function sweepProgress(configs: number, prompts: number): { event: (e: SweepEvent) => void; stop: () => void } {
  const per = prompts + 2;
  const tty = process.stderr.isTTY;
  // A MultiBar of one: its log() prints each finished configuration above the bar.
  const multi = tty
    ? new cliProgress.MultiBar(
        { stream: process.stderr, format: 'sweep [{bar}] {percentage}% | {config} | {phase} | ETA {eta_formatted}', hideCursor: true, etaBuffer: 30 },
        cliProgress.Presets.shades_classic,
      )
    : null;
  const bar = multi?.create(configs * per, 0, { config: '', phase: '' });
  const forget = multi ? onInterrupt(() => multi.stop()) : () => {};
  return {
    event(e) {
      if (e.kind === 'phase') {
        const step = e.phase === 'convert' ? 0 : e.phase === 'compare' ? 1 + e.done : per - 1;
        const what = e.phase === 'convert' ? `convert ${e.done}/${e.total} tensors` : e.phase === 'compare' ? `prompt ${e.done + 1}/${e.total}` : 'timing';
        bar?.update(e.index * per + step, { config: `${e.index + 1}/${configs} ${e.name}`, phase: what });
      } else if (e.kind === 'done') {
        bar?.update((e.index + 1) * per);
        const r = e.row;
        const s = r.summary;
        const line =
          `[${e.index + 1}/${configs}] ${r.name}: ` +
          (s ? `KL ${s.kl_mean.toPrecision(3)}, match ${(100 * s.match_rate).toFixed(1)}%` : 'no harness result') +
          (r.decode_tok_s !== null ? `, ${r.decode_tok_s.toFixed(0)} tok/s` : '') +
          ` (${(r.seconds.convert + r.seconds.compare + r.seconds.timing).toFixed(1)} s)` +
          (r.error ? ` — ${r.error}` : '');
        if (multi) multi.log(line + '\n');
        else process.stderr.write(line + '\n');
      }
    },
    stop() {
      forget();
      multi?.stop();
    },
  };
}
