import type { Command } from './common.js';
import { fixtureShapeNames, fixtureSpec, writeFixture } from '../model/fixture.js';
import { writeOverflowFixture } from '../fp16/overflow-fixture.js';
import { LutraError } from '../util/errors.js';

export const fixtureCommand: Command = {
  name: 'fixture',
  summary: 'write a deterministic random-weight Gemma 3 or Gemma 4 checkpoint in Hugging Face layout',
  usage: 'lutra fixture --out DIR [--shape NAME] [--layers N] [--seed N] [--expert-outliers X] [--residual-peak 2e5 [--peak-layer L]]',
  options: {
    out: { type: 'string', arg: 'DIR', help: 'output folder (must not exist)' },
    shape: { type: 'string', arg: 'NAME', help: `one of ${fixtureShapeNames().join(', ')}`, default: 'tiny' },
    layers: { type: 'string', arg: 'N', help: 'Gemma 4 shapes: keep only the first N layers (to fit the machine; KV sharing moves with the cut)' },
    seed: { type: 'string', short: 's', arg: 'N', help: 'random seed', default: '0' },
    'expert-outliers': { type: 'string', arg: 'X', help: 'mixture-of-experts shapes: ~1 row in 64 of each expert and 1 weight in 10 000 are X times larger (heavy tails, as trained experts have; try 10)' },
    'residual-peak': { type: 'string', arg: 'X', help: "an fp16 overflow fixture: raise one layer's post-feedforward norm gain until the f32 residual stream peaks at X on the calibration prompt" },
    'peak-layer': { type: 'string', arg: 'L', help: 'the layer whose gain is raised', default: 'num_layers/2 − 1' },
  },
  notes:
    'The checkpoint has config.json, bf16 model.safetensors and the real Gemma 3 tokenizer files.\n' +
    '`tiny` (8 layers, hidden 64, window 16) is shaped so that llama.cpp and Hugging Face agree on it.\n' +
    '`tiny-gemma4` (10 layers, hidden 64, window 8) has every dense Gemma 4 feature: per-layer embeddings,\n' +
    'KV sharing, double-wide MLPs, K=V full layers, two head sizes, proportional RoPE, softcapping, layer\n' +
    'scalars; its tokenizer is the Gemma 3 one with Gemma 4\'s turn markers and chat template.\n' +
    '`tiny-gemma4-moe` (6 layers, hidden 64, window 16) has mixture-of-experts layers (8 experts, top 2)\n' +
    'beside the dense MLP; `gemma-4-26b-a4b` is the real 26B-A4B layer shape (use --layers to cut it).',
  async run(flags) {
    const out = flags.string('out');
    const shape = flags.string('shape', 'tiny');
    const seed = flags.number('seed', 0, { integer: true, min: 0 });
    const t0 = performance.now();
    const seconds = () => ((performance.now() - t0) / 1000).toFixed(1);
    if (!flags.has('residual-peak')) {
      if (flags.has('peak-layer')) throw new LutraError('--peak-layer needs --residual-peak');
      const layers = flags.has('layers') ? flags.number('layers', 0, { integer: true, min: 1 }) : undefined;
      const note = fixtureSpec(shape, layers).note;
      const expertOutliers = flags.has('expert-outliers') ? flags.number('expert-outliers', 0, { min: 1 }) : undefined;
      await writeFixture(out, shape, seed, { layers, expertOutliers });
      process.stderr.write(`wrote ${shape} fixture (seed ${seed}${note ? `, ${note}` : ''}) to ${out} in ${seconds()} s\n`);
      return;
    }
    const peak = flags.number('residual-peak', 0, { min: Number.MIN_VALUE });
    const layer = flags.has('peak-layer') ? flags.number('peak-layer', 0, { integer: true, min: 0 }) : undefined;
    const r = await writeOverflowFixture(out, shape, seed, peak, layer);
    const first = r.audit.firstOverflow;
    process.stderr.write(
      `wrote ${shape} fixture (seed ${seed}) to ${out} in ${seconds()} s: f32 residual peak ${r.audit.residualPeak.toExponential(3)} ` +
        `(layer ${r.layer} gain raised); first fp16 overflow: ${first ? `layer ${first.layer} ${first.point}` : 'none'}; recommended α ${r.audit.alpha}\n`,
    );
  },
};
