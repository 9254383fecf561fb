import type { Command } from './common.js';
import { MODEL_OPTIONS, SAMPLING_OPTIONS, stdoutClosed } from './common.js';
import { PROMPT_OPTIONS, readPrompt } from './prompt.js';
import { openLibraryModel, samplingOptions } from './model-flags.js';
import { formatStats } from '../runtime/generate.js';
import { LutraError } from '../util/errors.js';
import { checkSpeculativeFlag, SPECULATIVE_NOTES, SPECULATIVE_OPTION, speculativeFor } from './speculative-flag.js';

export const generateCommand: Command = {
  name: 'generate',
  summary: 'generate text from a prompt, streaming tokens as they come',
  usage: 'lutra generate [-m PATH] (-p TEXT | -p - | --prompt-file FILE) [-n N] [--temperature T] [-s N] [--raw] [--stop TEXT] [--speculative lookup|suffix|draft:MODEL]',
  options: {
    ...MODEL_OPTIONS,
    ...PROMPT_OPTIONS,
    'max-tokens': { type: 'string', short: 'n', arg: 'N', help: 'tokens to generate at most', default: '128' },
    raw: { type: 'boolean', help: 'feed the prompt as plain text after <bos>, without the chat template' },
    ...SAMPLING_OPTIONS,
    ...SPECULATIVE_OPTION,
    stop: { type: 'string', multiple: true, arg: 'TEXT', help: 'stop before this text (repeatable)' },
    quiet: { type: 'boolean', help: 'print only the generated text: no loading line, no statistics' },
  },
  notes:
    'Sampling defaults to greedy (temperature 0). With --temperature > 0 the defaults are top-k 64, top-p 0.95.\n' +
    'Generation stops at <eos> or the end of the turn (<end_of_turn>, <turn|>), a --stop text, or after --max-tokens; Ctrl-C stops it early.\n' +
    'Statistics go to stderr.\n' +
    SPECULATIVE_NOTES,
  async run(flags) {
    const prompt = readPrompt(flags, 'generate');
    const maxTokens = flags.number('max-tokens', 128, { integer: true, min: 1 });
    const sampling = flags.number('temperature', 0, { min: 0 }) > 0;
    const opts = samplingOptions(flags, { temperature: 0, topK: sampling ? 64 : 0, topP: sampling ? 0.95 : 1, minP: 0, repetitionPenalty: 1 });
    checkSpeculativeFlag(flags); // before the (slow) model load
    const model = await openLibraryModel(flags, { announce: !flags.bool('quiet') });
    const speculative = await speculativeFor(flags, model);
    const abort = new AbortController();
    let interrupted = false;
    const onSignal = () => {
      interrupted = true;
      abort.abort();
    };
    process.once('SIGINT', onSignal);
    // A closed stdout stops generation too, but is no failure: nobody reads the rest.
    const onClosed = () => abort.abort();
    stdoutClosed.signal.addEventListener('abort', onClosed);
    try {
      const request = { ...opts, maxTokens, speculative: speculative.option, stop: flags.strings('stop'), signal: abort.signal };
      const raw = flags.bool('raw') || !model.info.hasChatTemplate;
      const ids = raw ? model.promptIds(prompt) : model.chatIds([{ role: 'user', content: prompt }]);
      if (ids.length >= model.info.contextLength) {
        throw new LutraError(`${flags.has('prompt-file') ? `--prompt-file ${flags.string('prompt-file')}` : '--prompt'} is ${ids.length} tokens but the context holds ${model.info.contextLength} (--context); shorten the prompt or raise --context`);
      }
      const stream = model.run(ids, request);
      for (;;) {
        const r = await stream.next();
        if (r.done) {
          process.stdout.write('\n');
          if (r.value.overflow) process.stderr.write(`warning: ${r.value.overflow}; the output after it is not meaningful\n`);
          if (!flags.bool('quiet')) process.stderr.write(`[${model.info.backend}, loaded in ${model.info.loadSeconds.toFixed(2)} s] ${formatStats(r.value, interrupted ? 'interrupted' : 'output closed')}\n`);
          if (r.value.finishReason === 'abort' && interrupted) process.exitCode = 130;
          break;
        }
        process.stdout.write(r.value.text);
      }
    } finally {
      process.off('SIGINT', onSignal);
      stdoutClosed.signal.removeEventListener('abort', onClosed);
      speculative.draft?.dispose();
      model.dispose();
    }
  },
};
