import { createInterface } from 'node:readline';
import type { Command } from './common.js';
import { MODEL_OPTIONS, SAMPLING_OPTIONS, stdoutClosed } from './common.js';
import { modelLabel, openLibraryModel, samplingOptions } from './model-flags.js';
import { formatStats } from '../runtime/generate.js';
import { checkSpeculativeFlag, SPECULATIVE_NOTES, SPECULATIVE_OPTION, speculativeFor } from './speculative-flag.js';
import { LutraError } from '../util/errors.js';

export const chatCommand: Command = {
  name: 'chat',
  summary: 'interactive chat with history and streaming',
  usage: 'lutra chat [-m PATH] [--system TEXT] [-n N] [sampling flags] [--speculative lookup|suffix|draft:MODEL]',
  options: {
    ...MODEL_OPTIONS,
    system: { type: 'string', arg: 'TEXT', help: 'system instructions (Gemma 3 folds them into the first user turn; Gemma 4 gives them a turn of their own)' },
    'max-tokens': { type: 'string', short: 'n', arg: 'N', help: 'tokens per answer at most', default: '512' },
    ...SAMPLING_OPTIONS,
    ...SPECULATIVE_OPTION,
    stats: { type: 'boolean', help: 'print prefill/decode speed after each answer' },
  },
  notes:
    'Sampling defaults: temperature 0.7, top-k 64, top-p 0.95. Commands: /reset clears the history.\n' +
    'Ctrl-C interrupts the current answer; Ctrl-D exits. The oldest turns are dropped when the context fills up.\n' +
    'Each turn prefills only its new tokens: the conversation stays in the KV cache.\n' +
    SPECULATIVE_NOTES,
  async run(flags) {
    const maxTokens = flags.number('max-tokens', 512, { integer: true, min: 1 });
    const opts = samplingOptions(flags, { temperature: 0.7, topK: 64, topP: 0.95, minP: 0, repetitionPenalty: 1 });
    checkSpeculativeFlag(flags); // before the (slow) model load
    const model = await openLibraryModel(flags, { announce: true });
    const speculative = await speculativeFor(flags, model);
    try {
      if (!model.info.hasChatTemplate) throw new LutraError(`${model.info.path}: the tokenizer has no chat template; use lutra generate --raw`);
      model.chatIds([{ role: 'user', content: 'hi' }]); // a template that does not parse fails here, not at the first message
    } catch (e) {
      speculative.draft?.dispose();
      model.dispose();
      throw e;
    }
    const chat = model.createChatSession({ system: flags.optionalString('system') });

    const rl = createInterface({ input: process.stdin, output: process.stdout, prompt: '> ' });
    let answering: AbortController | null = null;
    rl.on('SIGINT', () => {
      if (answering) answering.abort();
      else {
        process.stdout.write('\n(Ctrl-D to exit)\n');
        rl.prompt();
      }
    });
    // Without a terminal (piped input) Ctrl-C arrives as a signal, not a readline event.
    const onSignal = () => {
      if (answering) answering.abort();
      else rl.close();
    };
    process.on('SIGINT', onSignal);
    // Nobody reads the answers any more: stop the one under way and end the conversation.
    const onClosed = () => {
      answering?.abort();
      rl.close();
    };
    stdoutClosed.signal.addEventListener('abort', onClosed);
    const { backend, threads, loadSeconds, contextLength } = model.info;
    const on = backend === 'wasm' ? `${backend}, ${threads} thread${threads === 1 ? '' : 's'}` : backend;
    process.stderr.write(`lutra chat: ${modelLabel(model.info.path)} on ${on}, loaded in ${loadSeconds.toFixed(2)} s, context ${contextLength} tokens. /reset clears, Ctrl-D exits.\n`);
    rl.prompt();

    try {
      for await (const line of rl) {
        const text = line.trim();
        if (text === '') {
          rl.prompt();
          continue;
        }
        if (text === '/reset') {
          chat.reset();
          process.stdout.write('(history cleared)\n');
          rl.prompt();
          continue;
        }
        answering = new AbortController();
        try {
          const stream = chat.stream(text, { ...opts, maxTokens, speculative: speculative.option, signal: answering.signal });
          for (;;) {
            const r = await stream.next();
            if (r.done) {
              process.stdout.write(r.value.finishReason === 'abort' ? ' [interrupted]\n' : '\n');
              if (flags.bool('stats')) process.stderr.write(`${formatStats(r.value)}; reused ${r.value.usage.cachedTokens} cached tokens\n`);
              if (r.value.overflow) process.stderr.write(`warning: ${r.value.overflow}; the output after it is not meaningful\n`);
              break;
            }
            process.stdout.write(r.value.text);
          }
        } catch (e) {
          if (!(e instanceof LutraError)) throw e;
          process.stdout.write(`error: ${e.message}\n`);
        } finally {
          answering = null;
        }
        rl.prompt();
      }
    } finally {
      process.off('SIGINT', onSignal);
      stdoutClosed.signal.removeEventListener('abort', onClosed);
      speculative.draft?.dispose();
      model.dispose();
    }
    process.stdout.write('\n');
  },
};
