import type { Command } from './common.js';
import { SHAPES, writeFixture } from '../model/fixture.js';

export const fixtureCommand: Command = {
  name: 'fixture',
  summary: 'write a deterministic random-weight Gemma 3 checkpoint in Hugging Face layout',
  usage: 'lutra fixture --out DIR [--shape tiny|gemma-3-270m|gemma-3-1b] [--seed N]',
  options: {
    out: { type: 'string', arg: 'DIR', help: 'output folder (must not exist)' },
    shape: { type: 'string', arg: 'NAME', help: `one of ${Object.keys(SHAPES).join(', ')}`, default: 'tiny' },
    seed: { type: 'string', arg: 'N', help: 'random seed', default: '0' },
  },
  notes:
    'The checkpoint has config.json, bf16 model.safetensors and the real Gemma 3 tokenizer files.\n' +
    '`tiny` (8 layers, hidden 64, window 16) is shaped so that llama.cpp and Hugging Face agree on it.',
  run(flags) {
    const out = flags.string('out');
    const shape = flags.string('shape', 'tiny');
    const seed = flags.number('seed', 0, { integer: true, min: 0 });
    const t0 = performance.now();
    writeFixture(out, shape, seed);
    process.stderr.write(`wrote ${shape} fixture (seed ${seed}) to ${out} in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
  },
};
