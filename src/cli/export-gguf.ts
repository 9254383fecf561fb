import type { Command } from './common.js';
import { join, basename } from 'node:path';
import { Checkpoint, readJsonFile } from '../io/checkpoint.js';
import { exportGemma3Gguf, gemma3LlamaCppDifferences, type Gemma3GgufType } from '../io/gguf-gemma3.js';
import { dequantize } from '../backend/reference/index.js';
import { byteProgress } from './progress.js';
import { LutraError } from '../util/errors.js';

export const exportGgufCommand: Command = {
  name: 'export-gguf',
  summary: 'write a GGUF (gemma3 architecture) that llama.cpp loads',
  usage: 'lutra export-gguf [--model DIR] --out FILE.gguf [--type f32|f16|q8_0]',
  options: {
    model: { type: 'string', arg: 'DIR', help: 'model folder: a Hugging Face checkpoint', default: 'models/demo' },
    out: { type: 'string', arg: 'FILE', help: 'output GGUF file (written under a temporary name, then renamed)' },
    type: { type: 'string', arg: 'TYPE', help: 'type of the 2-D weights: f32, f16 or q8_0 (norms stay f32)', default: 'f32' },
  },
  notes:
    'Norm weights are stored as 1 + w, as llama.cpp expects for gemma3. llama.cpp hard-codes some Gemma 3\n' +
    'choices (exact sqrt(hidden) embedding scale, attention scale 1/sqrt(head_dim)); a warning names any\n' +
    'place where this model relies on a value llama.cpp will not read.',
  async run(flags) {
    const dir = flags.model();
    const out = flags.string('out');
    const type = flags.string('type', 'f32');
    if (!['f32', 'f16', 'q8_0'].includes(type)) throw new LutraError(`--type ${type}: expected f32, f16 or q8_0`);
    const src = Checkpoint.open(dir);
    try {
      for (const d of gemma3LlamaCppDifferences(src.config)) process.stderr.write(`warning: ${d}\n`);
      const tokenizerJson = readJsonFile(join(dir, 'tokenizer.json'), 'the tokenizer');
      const tokenizerConfig = readJsonFile(join(dir, 'tokenizer_config.json'), 'the tokenizer config');
      const tensors = src.names().map((hfName) => ({ hfName, shape: src.shape(hfName), load: () => dequantize(src.load(hfName)) }));
      let bar: ReturnType<typeof byteProgress> | null = null;
      const t0 = performance.now();
      await exportGemma3Gguf({
        out,
        cfg: src.config,
        tokenizerJson,
        tokenizerConfig,
        name: basename(dir),
        type: type as Gemma3GgufType,
        tensors,
        onProgress: (done, total) => {
          bar ??= byteProgress('export-gguf', total);
          bar.update(done);
        },
      });
      (bar as ReturnType<typeof byteProgress> | null)?.stop();
      process.stderr.write(`wrote ${out} (${type}) in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
    } finally {
      src.close();
    }
  },
};
