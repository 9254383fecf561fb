// Turn the shared model and sampling flags into a loaded model, a Session and a Sampler.
import type { Flags } from './common.js';
import { loadModel, makeBackend } from '../runtime/load.js';
import { Session } from '../runtime/session.js';
import { Sampler } from '../runtime/sampler.js';
import type { Gemma3Model } from '../model/gemma3.js';
import type { GemmaTokenizer } from '../tokenizer/tokenizer.js';
import { LutraError } from '../util/errors.js';
import { parseNumerics, type Numerics } from '../fp16/numerics.js';
import { describeOverflow, type OnOverflow } from '../fp16/overflow.js';
import { SIMD_LEVELS, type SimdLevel } from '../backend/wasm/kernels.js';

/** --activations q8|f32 (undefined: the backend default). */
export function activationsFlag(flags: Flags, name = 'activations'): 'q8' | 'f32' | undefined {
  const a = flags.optionalString(name);
  if (a !== undefined && a !== 'q8' && a !== 'f32') throw new LutraError(`--${name} ${a}: expected q8 or f32`);
  return a;
}

/** --simd auto|relaxed|baseline (undefined: auto). */
export function simdFlag(flags: Flags): SimdLevel | undefined {
  const v = flags.optionalString('simd');
  if (v !== undefined && !SIMD_LEVELS.includes(v as SimdLevel)) throw new LutraError(`--simd ${v}: expected ${SIMD_LEVELS.join(', ')}`);
  return v as SimdLevel | undefined;
}

/** --threads N (undefined: the backend default). */
export function threadsFlag(flags: Flags): number | undefined {
  return flags.has('threads') ? flags.number('threads', 1, { integer: true, min: 1, max: 256 }) : undefined;
}

export function onOverflowFlag(flags: Flags): OnOverflow {
  const v = flags.string('on-overflow', 'error');
  if (v !== 'error' && v !== 'continue') throw new LutraError(`--on-overflow ${v}: expected error or continue`);
  return v;
}

/** --model on --backend with --threads, --activations, --simd and --numerics, without the tokenizer (bench, a .gguf). */
export function openModelWeights(flags: Flags, opts: { numerics?: Numerics } = {}): { model: Gemma3Model; dir: string; loadSeconds: number; numerics: Numerics } {
  const { model, dir, loadSeconds, numerics } = load(flags, false, opts.numerics);
  return { model, dir, loadSeconds, numerics };
}

/** Open --model on --backend; `numerics` overrides --numerics (the fp16 audit always runs in f32). */
export function openModel(flags: Flags, opts: { numerics?: Numerics } = {}): { model: Gemma3Model; tokenizer: GemmaTokenizer; dir: string; loadSeconds: number; numerics: Numerics } {
  const loaded = load(flags, true, opts.numerics);
  return { ...loaded, tokenizer: loaded.tokenizer! };
}

function load(flags: Flags, tokenizer: boolean, numerics: Numerics | undefined) {
  const dir = flags.model();
  const threads = threadsFlag(flags);
  const backend = makeBackend(flags.string('backend', 'wasm'), { threads, activations: activationsFlag(flags), simd: simdFlag(flags) });
  const spec = flags.optionalString('numerics');
  const checkWeights = !flags.bool('no-check-weights');
  return { ...loadModel(dir, backend, { tokenizer, checkWeights, numerics: numerics ?? (spec !== undefined ? parseNumerics(spec) : undefined) }), dir };
}

export function openSession(flags: Flags, model: Gemma3Model, rollbackSlack = 0): Session {
  const maxCtx = model.cfg.maxPositions;
  return new Session(model, {
    contextLength: flags.number('context', Math.min(maxCtx, 4096), { integer: true, min: 1, max: maxCtx }),
    prefillBatch: flags.number('prefill-batch', 64, { integer: true, min: 1 }),
    rollbackSlack,
    onOverflow: onOverflowFlag(flags),
  });
}

/** After a run with --on-overflow continue: say on stderr that the output went through an overflow. */
export function reportOverflow(session: Session): void {
  if (session.overflow) process.stderr.write(`warning: ${describeOverflow(session.overflow)}; the output after it is not meaningful\n`);
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
