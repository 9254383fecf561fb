// Shared CLI plumbing: option specs that produce both the parser config and the --help text,
// typed flag readers with clear errors, and the default model location.
import { parseArgs } from 'node:util';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LutraError } from '../util/errors.js';
import { NUMERICS_HELP } from '../fp16/numerics.js';

export interface OptionSpec {
  type: 'string' | 'boolean';
  help: string;
  /** Shown in help; the command applies it. */
  default?: string;
  short?: string;
  multiple?: boolean;
  /** Placeholder shown in help, e.g. DIR. */
  arg?: string;
}

export interface Command {
  name: string;
  summary: string;
  usage: string;
  options: Record<string, OptionSpec>;
  /** Extra help text after the options. */
  notes?: string;
  /** Whether the command reads arguments that are not flags (a model path, say); others refuse them. */
  positionals?: boolean;
  /** Returns the exit code when it is not 0 (an error is thrown instead when the input is at fault). */
  run(flags: Flags, positionals: string[]): Promise<void | number> | void | number;
}

/** Aborted when standard output closes (the reader of a pipe went away): streaming commands stop. */
export const stdoutClosed = new AbortController();

/** The repository root (dist/src/cli/ → ../../..). */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const DEFAULT_MODEL = join(PACKAGE_ROOT, 'models', 'demo');
export const DEMO_LORA = join(PACKAGE_ROOT, 'models', 'demo-lora');

export function helpText(cmd: Command): string {
  const lines = [`lutra ${cmd.name}: ${cmd.summary}`, '', `usage: ${cmd.usage}`, '', 'options:'];
  const entries = Object.entries(cmd.options);
  // "-m, --model DIR" with the short form when there is one; long-only flags line up after it.
  const left = entries.map(([name, o]) => `  ${o.short ? `-${o.short}, ` : '    '}--${name}${o.type === 'string' ? ' ' + (o.arg ?? 'VALUE') : ''}`);
  const width = Math.max(...left.map((l) => l.length), 18) + 2;
  entries.forEach(([, o], i) => {
    const def = o.default !== undefined ? ` (default: ${o.default})` : '';
    lines.push(left[i].padEnd(width) + o.help + def);
  });
  lines.push('  -h, --help'.padEnd(width) + 'show this help');
  if (cmd.notes) lines.push('', cmd.notes);
  return lines.join('\n');
}

export class Flags {
  constructor(private values: Record<string, unknown>, private cmd: string) {}

  /** The command these flags belong to (for messages: `lutra generate: --context ...`). */
  get command(): string {
    return this.cmd;
  }

  has(name: string): boolean {
    return this.values[name] !== undefined;
  }

  string(name: string, fallback?: string): string {
    const v = this.values[name];
    if (v === undefined) {
      if (fallback === undefined) throw new LutraError(`lutra ${this.cmd}: --${name} is required`);
      return fallback;
    }
    return v as string;
  }

  optionalString(name: string): string | undefined {
    return this.values[name] as string | undefined;
  }

  strings(name: string): string[] {
    return (this.values[name] as string[] | undefined) ?? [];
  }

  bool(name: string): boolean {
    return this.values[name] === true;
  }

  /** A numeric flag in [min, max]; minOpen / maxOpen exclude that end (a penalty > 0, say). */
  number(name: string, fallback: number, { integer = false, min = -Infinity, max = Infinity, minOpen = false, maxOpen = false } = {}): number {
    const v = this.values[name];
    if (v === undefined) return fallback;
    const n = Number(v);
    if (v === '' || !Number.isFinite(n) || (integer && !Number.isInteger(n)) || n < min || n > max || (minOpen && n === min) || (maxOpen && n === max)) {
      const what = integer ? 'an integer' : 'a number';
      const lo = minOpen ? '(' : '[', hi = maxOpen ? ')' : ']';
      const range =
        min > -Infinity && max < Infinity ? ` in ${lo}${min}, ${max}${hi}`
        : min > -Infinity ? ` ${minOpen ? '>' : '≥'} ${min}`
        : max < Infinity ? ` ${maxOpen ? '<' : '≤'} ${max}`
        : '';
      throw new LutraError(`lutra ${this.cmd}: --${name} ${JSON.stringify(v)}: expected ${what}${range}`);
    }
    return n;
  }

  /** --model, defaulting to the shipped demo model. */
  model(): string {
    const m = this.optionalString('model');
    if (m !== undefined) return m;
    if (!existsSync(DEFAULT_MODEL)) throw new LutraError(`no --model given and the default model ${DEFAULT_MODEL} is not there`);
    return DEFAULT_MODEL;
  }
}

/**
 * `--top-k -1` → `--top-k=-1` for string options, so a negative number reaches the flag's own
 * range check instead of parseArgs' "argument is ambiguous".
 */
function joinNegativeValues(argv: string[], options: Record<string, { type: 'string' | 'boolean'; short?: string }>): string[] {
  const takesValue = (arg: string): string | null => {
    const long = /^--([^=]+)$/.exec(arg)?.[1];
    if (long !== undefined) return options[long]?.type === 'string' ? long : null;
    const short = /^-([^-])$/.exec(arg)?.[1];
    if (short === undefined) return null;
    const hit = Object.entries(options).find(([, o]) => o.short === short && o.type === 'string');
    return hit ? hit[0] : null;
  };
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--') {
      out.push(...argv.slice(i));
      break;
    }
    const name = takesValue(arg);
    const next = argv[i + 1];
    if (name !== null && next !== undefined && /^-(\d|\.\d|Infinity$)/.test(next)) {
      out.push(`--${name}=${next}`);
      i++;
    } else {
      out.push(arg);
    }
  }
  return out;
}

export function parseFlags(cmd: Command, argv: string[]): { flags: Flags; positionals: string[]; help: boolean } {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }> = { help: { type: 'boolean', short: 'h' } };
  for (const [name, o] of Object.entries(cmd.options)) {
    options[name] = { type: o.type };
    if (o.short) options[name].short = o.short;
    if (o.multiple) options[name].multiple = true;
  }
  let parsed;
  try {
    parsed = parseArgs({ args: joinNegativeValues(argv, options), options, allowPositionals: true, strict: true });
  } catch (e) {
    throw new LutraError(`lutra ${cmd.name}: ${parseError(e as Error & { code?: string })} (see lutra ${cmd.name} --help)`);
  }
  const { values, positionals } = parsed;
  if (positionals.length && !cmd.positionals && values.help !== true) {
    const arg = positionals[0];
    const hint =
      'model' in cmd.options && existsSync(arg) ? `; to run on that model, pass --model ${arg}`
      : !argv.includes('--') && argv.some((a) => a === '-p' || a === '--prompt') ? '; quote a prompt that has spaces'
      : '';
    throw new LutraError(`lutra ${cmd.name}: unexpected argument "${arg}": every input is a flag${hint} (see lutra ${cmd.name} --help)`);
  }
  return { flags: new Flags(values as Record<string, unknown>, cmd.name), positionals, help: values.help === true };
}

/** parseArgs' message, made one short line for the common cases. */
function parseError(e: Error & { code?: string }): string {
  const first = e.message.split('\n')[0];
  if (e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
    const opt = /^Unknown option '([^']+)'/.exec(first)?.[1];
    if (opt) return `unknown option ${opt}`;
  }
  if (e.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
    // "Option '-p, --prompt <value>' argument missing" and the like.
    const m = /^Option '(?:-\w, )?(--[\w-]+)[^']*' argument missing/.exec(first);
    if (m) return `${m[1]} needs a value`;
  }
  return first;
}

/** Common model/runtime flags, shared by commands that run a model. */
export const MODEL_OPTIONS: Record<string, OptionSpec> = {
  model: { type: 'string', short: 'm', arg: 'PATH', help: 'model: a Hugging Face checkpoint folder, a lutra package folder or a .gguf file (its tokenizer from the tokenizer.ggml.* metadata)', default: 'models/demo' },
  backend: { type: 'string', arg: 'NAME', help: 'compute backend: wasm (SIMD kernels on worker threads) or reference (the plain oracle)', default: 'wasm' },
  threads: { type: 'string', short: 't', arg: 'N', help: 'threads for the wasm backend', default: 'available cores' },
  context: { type: 'string', short: 'c', arg: 'N', help: 'context length in tokens', default: 'min(max_position_embeddings, 4096)' },
  'prefill-batch': { type: 'string', arg: 'N', help: 'tokens per prefill batch', default: '64' },
  kv: { type: 'string', arg: 'TYPE', help: "KV cache type: f16 (half the memory of f32, and half the bytes a decoded token reads at long context; llama.cpp's default) or f32", default: 'f16' },
  numerics: { type: 'string', arg: 'SPEC', help: NUMERICS_HELP, default: "the package's meta.yaml numerics, else f32" },
  'on-overflow': { type: 'string', arg: 'WHAT', help: 'with fp16 numerics: error (stop at the first non-finite activation, naming layer, op and position) or continue', default: 'error' },
  activations: { type: 'string', arg: 'KIND', help: 'inputs to int8/int4/LUT matmuls: q8 (quantized per 32 values, integer dot products, as llama.cpp; LUT tables rounded to 7- or 8-bit integers) or f32 (LUT tables exact)', default: 'q8' },
  'no-repack': { type: 'boolean', help: 'keep LUT weights packed in memory (wasm backend, q8 activations), at about half the decode speed of the default, which holds lut1..lut3 as lut4 (4 bits a weight) and lut5..lut7 as int8 rows (8 bits)' },
  'no-check-weights': { type: 'boolean', help: 'skip the NaN/Inf scan of every weight at load (it adds about 1 s of CPU to a ~5 s load of the 270m shape)' },
  lora: { type: 'string', multiple: true, arg: 'DIR[:W]', help: 'apply a LoRA adapter (a PEFT folder: adapter_config.json + adapter_model.safetensors) unmerged, its change scaled by W (default 1); repeat to blend several' },
  simd: { type: 'string', arg: 'LEVEL', help: 'wasm kernels: relaxed (relaxed-SIMD int4 kernels; Node 20 gets them through a V8 flag lutra sets), baseline (SIMD128 only) or auto (relaxed where the engine has it; $LUTRA_SIMD overrides auto)', default: 'auto' },
};

export const SAMPLING_OPTIONS: Record<string, OptionSpec> = {
  temperature: { type: 'string', arg: 'T', help: 'sampling temperature; 0 is greedy' },
  'top-k': { type: 'string', arg: 'K', help: 'keep the K most likely tokens; 0 keeps all' },
  'top-p': { type: 'string', arg: 'P', help: 'nucleus sampling: keep the smallest set with probability ≥ P' },
  'min-p': { type: 'string', arg: 'P', help: 'drop tokens below P × the top probability' },
  'repetition-penalty': { type: 'string', arg: 'R', help: 'penalise tokens already seen: positive scores divided by R, negative ones multiplied', default: '1, off' },
  seed: { type: 'string', short: 's', arg: 'N', help: 'random seed; the same seed gives the same text', default: '0' },
};
