// --speculative off|lookup|suffix|draft:MODEL for generate, chat and serve: the generation option,
// and the draft model it loads (the caller disposes it).
import type { Flags, OptionSpec } from './common.js';
import { loadOptions } from './model-flags.js';
import { loadModel, type LutraModel } from '../api/model.js';
import type { SpeculativeOption } from '../runtime/speculative.js';
import { LutraError } from '../util/errors.js';

export const SPECULATIVE_OPTION: Record<string, OptionSpec> = {
  speculative: {
    type: 'string',
    arg: 'SOURCE',
    help: 'speculative decoding: lookup (n-grams of the prompt and output), suffix (earlier outputs), draft:MODEL (a model sharing the tokenizer), or off',
    default: 'off',
  },
};

export const SPECULATIVE_NOTES =
  'With --speculative the output is the same (greedy) or distributed the same (sampling) as without; drafting\n' +
  'adapts its length to the acceptance rate and turns itself off while it does not pay.';

export interface SpeculativeFlag {
  option: SpeculativeOption | undefined;
  /** The loaded draft model of draft:MODEL. */
  draft?: LutraModel;
}

/** Check --speculative's form (before any model is loaded). */
export function checkSpeculativeFlag(flags: Flags): void {
  const v = flags.optionalString('speculative');
  if (v === undefined || v === 'off' || v === 'lookup' || v === 'suffix' || (v.startsWith('draft:') && v.length > 'draft:'.length)) return;
  throw new LutraError(`--speculative ${v}: expected lookup, suffix, draft:MODEL or off`);
}

/** Read --speculative; draft:MODEL loads MODEL with the same backend flags as --model. */
export async function speculativeFlag(flags: Flags): Promise<SpeculativeFlag> {
  checkSpeculativeFlag(flags);
  const v = flags.optionalString('speculative');
  if (v === undefined || v === 'off') return { option: undefined };
  if (v === 'lookup' || v === 'suffix') return { option: v };
  if (v.startsWith('draft:') && v.length > 'draft:'.length) {
    const path = v.slice('draft:'.length);
    try {
      const draft = await loadModel(path, loadOptions(flags, { parallel: 1 }));
      return { option: { draft }, draft };
    } catch (e) {
      if (e instanceof LutraError) throw new LutraError(`--speculative draft:${path}: ${e.message}`, e.code);
      throw e;
    }
  }
  throw new LutraError(`--speculative ${v}: expected lookup, suffix, draft:MODEL or off`);
}

/** speculativeFlag for a command that has loaded `model` already: on a bad flag the model is disposed. */
export async function speculativeFor(flags: Flags, model: LutraModel): Promise<SpeculativeFlag> {
  try {
    return await speculativeFlag(flags);
  } catch (e) {
    model.dispose();
    throw e;
  }
}
