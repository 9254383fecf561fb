// Turn the shared model and sampling flags into a loaded model, a Session and a Sampler.
import type { Flags } from './common.js';
import { loadModel, makeBackend } from '../runtime/load.js';
import { Session } from '../runtime/session.js';
import { Sampler } from '../runtime/sampler.js';
import type { Gemma3Model } from '../model/gemma3.js';
import type { GemmaTokenizer } from '../tokenizer/tokenizer.js';

export function openModel(flags: Flags): { model: Gemma3Model; tokenizer: GemmaTokenizer; dir: string; loadSeconds: number } {
  const dir = flags.model();
  const threads = flags.has('threads') ? flags.number('threads', 1, { integer: true, min: 1, max: 256 }) : undefined;
  const backend = makeBackend(flags.string('backend', 'wasm'), { threads });
  const { model, tokenizer, loadSeconds } = loadModel(dir, backend);
  return { model, tokenizer: tokenizer!, dir, loadSeconds };
}

export function openSession(flags: Flags, model: Gemma3Model, rollbackSlack = 0): Session {
  const maxCtx = model.cfg.maxPositions;
  return new Session(model, {
    contextLength: flags.number('context', Math.min(maxCtx, 4096), { integer: true, min: 1, max: maxCtx }),
    prefillBatch: flags.number('prefill-batch', 64, { integer: true, min: 1 }),
    rollbackSlack,
  });
}

export interface SamplingDefaults {
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  repetitionPenalty: number;
}

export function makeSampler(flags: Flags, d: SamplingDefaults): Sampler {
  return new Sampler({
    temperature: flags.number('temperature', d.temperature, { min: 0 }),
    topK: flags.number('top-k', d.topK, { integer: true, min: 0 }),
    topP: flags.number('top-p', d.topP, { min: 0, max: 1 }),
    minP: flags.number('min-p', d.minP, { min: 0, max: 1 }),
    repetitionPenalty: flags.number('repetition-penalty', d.repetitionPenalty, { min: 0 }),
    seed: flags.number('seed', 0, { integer: true, min: 0 }),
  });
}
