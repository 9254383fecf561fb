import { createInterface } from 'node:readline';
import type { Command } from './common.js';
import { MODEL_OPTIONS, SAMPLING_OPTIONS } from './common.js';
import { backendLabel, makeSampler, modelLabel, openModel, openSession, reportOverflow } from './model-flags.js';
import { formatStats, generateTokens } from '../runtime/generate.js';
import { StreamDecoder, type ChatMessage } from '../tokenizer/tokenizer.js';
import { LutraError } from '../util/errors.js';

export const chatCommand: Command = {
  name: 'chat',
  summary: 'interactive chat with history and streaming',
  usage: 'lutra chat [-m DIR] [--system TEXT] [-n N] [sampling flags]',
  options: {
    ...MODEL_OPTIONS,
    system: { type: 'string', arg: 'TEXT', help: 'system instructions (Gemma folds them into the first user turn)' },
    'max-tokens': { type: 'string', short: 'n', arg: 'N', help: 'tokens per answer at most', default: '512' },
    ...SAMPLING_OPTIONS,
    stats: { type: 'boolean', help: 'print prefill/decode speed after each answer' },
  },
  notes:
    'Sampling defaults: temperature 0.7, top-k 64, top-p 0.95. Commands: /reset clears the history.\n' +
    'Ctrl-C interrupts the current answer; Ctrl-D exits. The oldest turns are dropped when the context fills up.',
  async run(flags) {
    const maxTokens = flags.number('max-tokens', 512, { integer: true, min: 1 });
    const { model, tokenizer, dir, loadSeconds } = openModel(flags, { announce: true });
    if (!tokenizer.hasChatTemplate) throw new LutraError(`${dir}: the tokenizer has no chat template; use lutra generate --raw`);
    // Slack lets the cache step back over an answer whose re-rendered tokens differ (the template trims).
    const session = openSession(flags, model, maxTokens + 16);
    const sampler = makeSampler(flags, { temperature: 0.7, topK: 64, topP: 0.95, minP: 0, repetitionPenalty: 1 });
    const system = flags.optionalString('system');
    let history: ChatMessage[] = [];
    let cached: number[] = []; // ids whose keys/values are in the session's cache

    const rl = createInterface({ input: process.stdin, output: process.stdout, prompt: '> ' });
    let generating = false;
    let interrupt = false;
    rl.on('SIGINT', () => {
      if (generating) interrupt = true;
      else {
        process.stdout.write('\n(Ctrl-D to exit)\n');
        rl.prompt();
      }
    });
    // Without a terminal (piped input) Ctrl-C arrives as a signal, not a readline event.
    const onSignal = () => {
      if (generating) interrupt = true;
      else rl.close();
    };
    process.on('SIGINT', onSignal);
    process.stderr.write(
      `lutra chat: ${modelLabel(dir)} on ${backendLabel(model.backend)}, loaded in ${loadSeconds.toFixed(2)} s, context ${session.contextLength} tokens. /reset clears, Ctrl-D exits.\n`,
    );
    rl.prompt();

    /** Render history, dropping the oldest user/model pairs until it fits with room for an answer. */
    const fit = (): number[] => {
      for (;;) {
        const msgs: ChatMessage[] = system ? [{ role: 'system', content: system }, ...history] : history;
        const ids = tokenizer.encodeChat(msgs);
        if (ids.length + maxTokens <= session.contextLength || history.length <= 1) {
          if (ids.length >= session.contextLength) throw new LutraError(`the message is ${ids.length} tokens; the context holds ${session.contextLength}`);
          return ids;
        }
        history = history.slice(2);
      }
    };

    for await (const line of rl) {
      const text = line.trim();
      if (text === '') {
        rl.prompt();
        continue;
      }
      if (text === '/reset') {
        history = [];
        cached = [];
        session.reset();
        process.stdout.write('(history cleared)\n');
        rl.prompt();
        continue;
      }
      history.push({ role: 'user', content: text });
      let ids: number[];
      try {
        ids = fit();
      } catch (e) {
        history.pop();
        process.stdout.write(`error: ${(e as Error).message}\n`);
        rl.prompt();
        continue;
      }
      // Reuse the cached tokens the rendered conversation still starts with; else start over.
      let common = 0;
      while (common < cached.length && common < ids.length - 1 && cached[common] === ids[common]) common++;
      if (session.truncate(common)) cached = cached.slice(0, common);
      else {
        session.reset();
        cached = [];
      }
      const fresh = ids.slice(cached.length);
      const stream = new StreamDecoder(tokenizer);
      const answer: number[] = [];
      generating = true;
      interrupt = false;
      const gen = generateTokens(session, sampler, fresh, {
        maxTokens: Math.min(maxTokens, session.contextLength - ids.length),
        stopIds: tokenizer.stopIds,
        interrupted: () => interrupt,
        history: cached,
      });
      for (;;) {
        const r = await gen.next();
        if (r.done) {
          generating = false;
          process.stdout.write(r.value.stoppedBy === 'interrupted' ? ' [interrupted]\n' : '\n');
          if (flags.bool('stats')) process.stderr.write(`${formatStats(r.value)}; reused ${cached.length} cached tokens\n`);
          reportOverflow(session);
          break;
        }
        answer.push(r.value);
        process.stdout.write(stream.push(r.value));
      }
      cached = [...ids, ...answer].slice(0, session.position);
      history.push({ role: 'assistant', content: tokenizer.decode(answer) });
      rl.prompt();
    }
    process.off('SIGINT', onSignal);
    process.stdout.write('\n');
  },
};
