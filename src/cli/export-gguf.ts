import type { Command } from './common.js';
import { exportGguf } from '../io/gguf-export.js';
import { EXPORT_TYPES, type GgufExportType } from '../io/gguf-model.js';
import { architectureOf } from '../arch/registry.js';
import { byteProgress } from './progress.js';
import { LutraError } from '../util/errors.js';


export const exportGgufCommand: Command = {
  name: 'export-gguf',
  summary: 'write a GGUF (the model\'s architecture: gemma3 or gemma4) that llama.cpp loads',
  usage: 'lutra export-gguf [--model SRC] --out FILE.gguf [--force] [--type f32|f16|q8_0|q4_0] [--tokenizer DIR]',
  options: {
    model: { type: 'string', short: 'm', arg: 'SRC', help: 'a Hugging Face checkpoint folder, a lutra package or a GGUF file', default: 'models/demo' },
    out: { type: 'string', arg: 'FILE', help: 'output GGUF file (must not exist unless --force; written under a temporary name, then renamed)' },
    force: { type: 'boolean', help: 'replace an existing --out, once the new file is complete' },
    type: { type: 'string', arg: 'TYPE', help: 'type of the 2-D weights: f32, f16, q8_0 or q4_0 (norms stay f32)', default: 'f32' },
    tokenizer: { type: 'string', arg: 'DIR', help: 'folder with tokenizer.json and tokenizer_config.json', default: 'the model folder' },
  },
  notes:
    'Norm weights are stored as 1 + w, as llama.cpp expects for gemma3. A package\'s int8:32 tensors are\n' +
    'written to q8_0 (and int4:32 to q4_0) block for block, bit-exact; other tensors are dequantized and\n' +
    'encoded. A package\'s separate lm_head.weight becomes output.weight. llama.cpp hard-codes some Gemma 3\n' +
    'choices (exact sqrt(hidden) embedding scale, attention scale 1/sqrt(head_dim)); a warning names any\n' +
    'place where this model relies on a value llama.cpp will not read.',
  async run(flags) {
    const model = flags.model();
    const out = flags.string('out');
    const type = flags.string('type', 'f32');
    if (!(EXPORT_TYPES as string[]).includes(type)) throw new LutraError(`--type ${type}: expected ${EXPORT_TYPES.join(', ')}`);
    let bar: ReturnType<typeof byteProgress> | null = null;
    const t0 = performance.now();
    await exportGguf({
      model,
      out,
      force: flags.bool('force'),
      type: type as GgufExportType,
      tokenizer: flags.optionalString('tokenizer'),
      onOpen: (src) => {
        for (const d of architectureOf(src.config).gguf.differences(src.config)) process.stderr.write(`warning: ${d}\n`);
      },
      onProgress: (done, total) => {
        bar ??= byteProgress('export-gguf', total);
        bar.update(done);
      },
    }).finally(() => (bar as ReturnType<typeof byteProgress> | null)?.stop());
    process.stderr.write(`wrote ${out} (${type}) in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
  },
};
