import type { Command } from './common.js';
import { MODEL_OPTIONS, SAMPLING_OPTIONS } from './common.js';
import { makeSampler, openModel, openSession, reportOverflow } from './model-flags.js';
import { formatStats, generateTokens } from '../runtime/generate.js';
import { StreamDecoder } from '../tokenizer/tokenizer.js';
import { LutraError } from '../util/errors.js';

export const generateCommand: Command = {
  name: 'generate',
  summary: 'generate text from a prompt, streaming tokens as they come',
  usage: 'lutra generate [--model DIR] --prompt TEXT [--max-tokens N] [--temperature T] [--seed N] [--raw]',
  options: {
    ...MODEL_OPTIONS,
    prompt: { type: 'string', arg: 'TEXT', help: 'the prompt (required)' },
    'max-tokens': { type: 'string', arg: 'N', help: 'tokens to generate at most', default: '128' },
    raw: { type: 'boolean', help: 'feed the prompt as plain text after <bos>, without the chat template' },
    ...SAMPLING_OPTIONS,
    quiet: { type: 'boolean', help: 'print only the generated text, no statistics' },
  },
  notes:
    'Sampling defaults to greedy (temperature 0). With --temperature > 0 the defaults are top-k 64, top-p 0.95.\n' +
    'Generation stops at <eos> or <end_of_turn>, or after --max-tokens. Statistics go to stderr.',
  async run(flags) {
    const prompt = flags.string('prompt');
    const maxTokens = flags.number('max-tokens', 128, { integer: true, min: 1 });
    // Sampling flags are checked before the (slow) model load.
    const sampling = flags.number('temperature', 0, { min: 0 }) > 0;
    const sampler = makeSampler(flags, { temperature: 0, topK: sampling ? 64 : 0, topP: sampling ? 0.95 : 1, minP: 0, repetitionPenalty: 1 });
    const { model, tokenizer, loadSeconds } = openModel(flags);
    const session = openSession(flags, model);
    const ids =
      flags.bool('raw') || !tokenizer.hasChatTemplate ? tokenizer.encode(prompt) : tokenizer.encodeChat([{ role: 'user', content: prompt }]);
    if (ids.length > session.contextLength) {
      throw new LutraError(`--prompt is ${ids.length} tokens but the context holds ${session.contextLength} (--context); shorten the prompt or raise --context`);
    }
    const stream = new StreamDecoder(tokenizer);
    const gen = generateTokens(session, sampler, ids, { maxTokens, stopIds: tokenizer.stopIds });
    for (;;) {
      const r = await gen.next();
      if (r.done) {
        process.stdout.write('\n');
        reportOverflow(session);
        if (!flags.bool('quiet')) process.stderr.write(`[${model.backend.name}, loaded in ${loadSeconds.toFixed(2)} s] ${formatStats(r.value)}\n`);
        break;
      }
      process.stdout.write(stream.push(r.value));
    }
  },
};
