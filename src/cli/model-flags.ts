// Turn the shared model and sampling flags into a loaded model, a Session and generation options.
import type { Flags } from './common.js';
import { DEFAULT_MODEL } from './common.js';
import { kvTypes, type Backend, type KvType } from '../backend/backend.js';
import { loadModel, makeBackend } from '../runtime/load.js';
import type { Session } from '../runtime/session.js';
import type { CausalLM } from '../model/forward.js';
import type { GemmaTokenizer } from '../tokenizer/tokenizer.js';
import { LutraError } from '../util/errors.js';
import { parseNumerics, type Numerics } from '../fp16/numerics.js';
import { describeOverflow, type OnOverflow } from '../fp16/overflow.js';
import { SIMD_LEVELS, type SimdLevel } from '../backend/wasm/kernels.js';
import { loadModel as loadLibraryModel, type LoadOptions, type LutraModel } from '../api/model.js';
import type { GenerateOptions } from '../runtime/generate.js';
import { parseLoraSpec } from '../adapters/lora.js';
import type { PreparedLora } from '../adapters/apply.js';

/** --lora DIR[:W] (repeatable) as folder/weight pairs. */
export function loraFlags(flags: Flags): { dir: string; weight: number }[] {
  return flags.strings('lora').map((v) => parseLoraSpec(v));
}

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

/** --kv f16|f32 (default f16, as the library's), or the flag `name` of that kind with its own default. */
export function kvFlag(flags: Flags, name = 'kv', dflt: KvType = 'f16'): KvType {
  const v = flags.string(name, dflt);
  if (!kvTypes.includes(v as KvType)) throw new LutraError(`--${name} ${v}: expected ${kvTypes.join(' or ')}`);
  return v as KvType;
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

export interface OpenOptions {
  /** Overrides --numerics (the fp16 audit always runs in f32). */
  numerics?: Numerics;
  /** Receives the loading line (modelLoadingLine) once the model's files are found; true: print it on stderr. */
  announce?: boolean | ((line: string) => void);
}

/** --model on --backend with --threads, --activations, --simd and --numerics, without the tokenizer (bench, a .gguf). */
export function openModelWeights(flags: Flags, opts: OpenOptions = {}): { model: CausalLM; dir: string; loadSeconds: number; numerics: Numerics; lora: PreparedLora | null } {
  const { model, dir, loadSeconds, numerics, lora } = load(flags, false, opts);
  return { model, dir, loadSeconds, numerics, lora };
}

/** Open --model on --backend with its tokenizer. */
export function openModel(flags: Flags, opts: OpenOptions = {}): { model: CausalLM; tokenizer: GemmaTokenizer; dir: string; loadSeconds: number; numerics: Numerics; lora: PreparedLora | null } {
  const loaded = load(flags, true, opts);
  return { ...loaded, tokenizer: loaded.tokenizer! };
}

/** The model as the user knows it: models/demo for the shipped default, else the path as given. */
export function modelLabel(dir: string): string {
  return dir === DEFAULT_MODEL ? 'models/demo' : dir;
}

/** "wasm, 2 threads" or "reference". */
export function backendLabel(backend: Backend): string {
  const threads = (backend as { threads?: number }).threads;
  return threads === undefined ? backend.name : `${backend.name}, ${threads} thread${threads === 1 ? '' : 's'}`;
}

/** "loading models/demo (wasm, 2 threads)...": what runs while the weights are read. */
export function modelLoadingLine(dir: string, backend: Backend): string {
  return `loading ${modelLabel(dir)} (${backendLabel(backend)})...`;
}

function load(flags: Flags, tokenizer: boolean, opts: OpenOptions) {
  const dir = flags.model();
  const threads = threadsFlag(flags);
  const backend = makeBackend(flags.string('backend', 'wasm'), { threads, activations: activationsFlag(flags), simd: simdFlag(flags), repack: !flags.bool('no-repack') });
  const spec = flags.optionalString('numerics');
  let announced = false;
  const say = opts.announce === true ? (line: string) => process.stderr.write(line + '\n') : opts.announce || undefined;
  const onOpened = say
    ? () => {
        say(modelLoadingLine(dir, backend));
        announced = true;
      }
    : undefined;
  try {
    const numerics = opts.numerics ?? (spec !== undefined ? parseNumerics(spec) : undefined);
    return { ...loadModel(dir, backend, { tokenizer, numerics, onOpened, checkWeights: !flags.bool('no-check-weights'), lora: loraFlags(flags) }), dir };
  } catch (e) {
    backend.dispose?.();
    // On a terminal, take the loading line back so that the error stands alone.
    if (announced && process.stderr.isTTY) process.stderr.write('\x1b[1A\x1b[2K');
    throw e;
  }
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

/** The shared model flags as library load options. */
export function loadOptions(flags: Flags, extra: LoadOptions = {}): LoadOptions {
  const backend = flags.string('backend', 'wasm');
  if (backend !== 'wasm' && backend !== 'reference') throw new LutraError(`--backend ${backend}: unknown; available: wasm, reference`);
  return {
    backend,
    threads: flags.has('threads') ? flags.number('threads', 1, { integer: true, min: 1, max: 256 }) : undefined,
    numerics: flags.optionalString('numerics'),
    activations: activationsFlag(flags),
    simd: simdFlag(flags),
    repack: !flags.bool('no-repack'),
    contextLength: flags.has('context') ? flags.number('context', 4096, { integer: true }) : undefined,
    checkWeights: !flags.bool('no-check-weights'),
    prefillBatch: flags.number('prefill-batch', 64, { integer: true, min: 1 }),
    kvCache: kvFlag(flags),
    onOverflow: onOverflowFlag(flags),
    lora: flags.has('lora') ? loraFlags(flags).map((l) => ({ path: l.dir, weight: l.weight })) : undefined,
    ...extra,
  };
}

/** Load --model through the library API (generate, chat, serve); `announce` prints the loading line. */
export async function openLibraryModel(flags: Flags, extra: LoadOptions & { announce?: boolean } = {}): Promise<LutraModel> {
  const { announce, ...rest } = extra;
  const dir = flags.model();
  let announced = false;
  const opts = loadOptions(flags, {
    ...rest,
    onOpened: announce
      ? (b) => {
          const on = b.name === 'wasm' ? `${b.name}, ${b.threads} thread${b.threads === 1 ? '' : 's'}` : b.name;
          process.stderr.write(`loading ${modelLabel(dir)} (${on})...\n`);
          announced = true;
        }
      : undefined,
  });
  try {
    return await loadLibraryModel(dir, opts);
  } catch (e) {
    // On a terminal, take the loading line back so that the error stands alone.
    if (announced && process.stderr.isTTY) process.stderr.write('\x1b[1A\x1b[2K');
    // The library names its option; on the command line it is --context.
    const m = e instanceof LutraError ? /^contextLength (\S+): (expected [^(]*[^ (])/.exec(e.message) : null;
    if (m) throw new LutraError(`lutra ${flags.command}: --context "${m[1]}": ${m[2]}`);
    throw e;
  }
}

/** The sampling flags as generation options, with a command's defaults; a bad value names its flag. */
export function samplingOptions(flags: Flags, d: SamplingDefaults): GenerateOptions {
  const opts = {
    temperature: flags.number('temperature', d.temperature, { min: 0 }),
    topK: flags.number('top-k', d.topK, { integer: true, min: 0 }),
    topP: flags.number('top-p', d.topP, { min: 0, max: 1, minOpen: true }),
    minP: flags.number('min-p', d.minP, { min: 0, max: 1, maxOpen: true }),
    repetitionPenalty: flags.number('repetition-penalty', d.repetitionPenalty, { min: 0, minOpen: true }),
    seed: flags.number('seed', 0, { integer: true, min: 0, max: 2 ** 32 - 1 }),
  };
  return opts; // the ranges are the sampler's own, open ends included
}
