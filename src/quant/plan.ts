// Which format each tensor gets: --quant PART=FORMAT specs (and ANEMLL's --lut1/2/3 shorthand)
// resolved against the parts the architecture's manifest gives each tensor, with 1-D tensors and
// small tensors left as they are.
import { LutraError } from '../util/errors.js';
import type { WeightFormat } from '../model/weight.js';
import { formatName, misfit, parseFormat } from '../model/formats.js';
import { ALL_PARTS, PARTS, type Part } from '../arch/architecture.js';
import { matrixShape } from '../model/weight.js';

export interface QuantPlan {
  parts: Partial<Record<Part, WeightFormat>>;
  /** The command-line flag that set each part's format (for messages), e.g. `--quant ffn=int4:48`. */
  flags?: Partial<Record<Part, string>>;
  /** Tensors with fewer elements stay in their source format. */
  weightThreshold: number;
  /**
   * Parts given int8:e / int4:e: one scale per matrix of a stack (per expert; per tensor for a
   * single matrix), stored as the per-channel format whose scales repeat within each matrix.
   */
  perMatrix?: Partial<Record<Part, boolean>>;
}

/** `int8:e` / `int4:e`: the per-channel format the per-matrix rule is stored as, else null. */
function perMatrixFormat(text: string): WeightFormat | null {
  const m = /^\s*(int8|int4):e\s*$/i.exec(text);
  return m ? { kind: m[1].toLowerCase() as 'int8' | 'int4', group: 'c' } : null;
}

/** A `--quant` FORMAT as the plan reads it (int8:e / int4:e, or a stored format); errors name `where`. */
export function parsePlanFormat(text: string, where: string): WeightFormat {
  return perMatrixFormat(text) ?? parseFormat(text, where);
}

/** Build a plan from `--quant PART=FORMAT` entries and `--lutN B[,G]` shorthands (later wins). */
export function buildPlan(opts: { quant: string[]; lut1?: string; lut2?: string; lut3?: string; weightThreshold: number }): QuantPlan {
  const parts: QuantPlan['parts'] = {};
  const flags: NonNullable<QuantPlan['flags']> = {};
  const perMatrix: NonNullable<QuantPlan['perMatrix']> = {};
  const set = (ps: readonly Part[], f: WeightFormat, flag: string, byMatrix = false) => {
    for (const p of ps) {
      parts[p] = f;
      flags[p] = flag;
      if (byMatrix) perMatrix[p] = true;
      else delete perMatrix[p];
    }
  };
  const lut = (flag: string, v: string): WeightFormat => {
    const m = /^\s*([1-8])\s*(?:,\s*(\d+))?\s*$/.exec(v);
    if (!m) throw new LutraError(`${flag} "${v}": expected BITS[,GROUP], e.g. 4,4 (GROUP defaults to 8; 0 = per tensor)`);
    return { kind: 'lut', bits: Number(m[1]), group: m[2] === undefined ? 8 : Number(m[2]) };
  };
  for (const q of opts.quant) {
    const eq = q.indexOf('=');
    if (eq < 0) throw new LutraError(`--quant "${q}": expected PART=FORMAT, e.g. ffn=lut4:4`);
    const part = q.slice(0, eq).trim();
    const byMatrix = perMatrixFormat(q.slice(eq + 1));
    const format = parsePlanFormat(q.slice(eq + 1), `--quant ${q}`);
    if (part === 'all') set(ALL_PARTS, format, `--quant ${q}`, byMatrix !== null);
    else if ((PARTS as string[]).includes(part)) set([part as Part], format, `--quant ${q}`, byMatrix !== null);
    else throw new LutraError(`--quant "${q}": unknown part "${part}"; expected ${PARTS.join(', ')} or all`);
  }
  if (opts.lut1 !== undefined) set(['embed'], lut('--lut1', opts.lut1), `--lut1 ${opts.lut1}`);
  if (opts.lut2 !== undefined) set(['attn', 'ffn'], lut('--lut2', opts.lut2), `--lut2 ${opts.lut2}`);
  if (opts.lut3 !== undefined) set(['lmhead'], lut('--lut3', opts.lut3), `--lut3 ${opts.lut3}`);
  return { parts, flags, weightThreshold: opts.weightThreshold, perMatrix };
}

/** Rows of one matrix of the tensor when the plan quantizes it with one scale per matrix (int8:e / int4:e), else undefined. */
export function perMatrixRows(plan: QuantPlan, part: Part | null, shape: number[]): number | undefined {
  if (!part || !plan.perMatrix?.[part] || formatFor(plan, part, shape) === null) return undefined;
  return shape.length > 2 ? shape[shape.length - 2] : matrixShape(shape)[0];
}

/** The format for one tensor of the given part (from the architecture's manifest), or null to keep the source's. */
export function formatFor(plan: QuantPlan, part: Part | null, shape: number[]): WeightFormat | null {
  if (shape.length < 2) return null;
  if (!part) return null;
  const f = plan.parts[part];
  if (!f) return null;
  const [rows, cols] = matrixShape(shape);
  if (rows * cols < plan.weightThreshold) return null;
  return f;
}

/**
 * Check a planned format against a tensor's shape before any work starts: an int block size must
 * divide the columns, a LUT group the rows. The message names the tensor, its shape, the format
 * and the flag that chose it.
 */
export function checkFormatFits(plan: QuantPlan, name: string, part: Part | null, shape: number[], f: WeightFormat, where: string): void {
  // A stack of matrices (experts) is quantized as one matrix, and LUT groups must not span two of them.
  const [, cols] = matrixShape(shape);
  const problem = misfit(f, ...matrixShape(shape)) ?? (shape.length > 2 ? misfit(f, shape[shape.length - 2], cols) : null);
  if (problem === null) return;
  const flag = (part && plan.flags?.[part]) ?? '--quant';
  throw new LutraError(`${flag}: ${formatName(f)} does not fit tensor "${name}" [${shape}] of ${where}: ${problem}`);
}

/** The plan in ANEMLL's meta.yaml field style (lut_ffn, lut_ffn_per_channel, …) plus lutra's own. */
export function planFields(plan: QuantPlan): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const seedName: Record<Part, string> = { embed: 'embeddings', ple: 'ple', attn: 'attn', ffn: 'ffn', experts: 'experts', router: 'router', lmhead: 'lmhead' };
  for (const p of PARTS) {
    const f = plan.parts[p];
    out[`quant_${p}`] = f ? (plan.perMatrix?.[p] ? `${f.kind}:e` : formatName(f)) : 'none';
    out[`lut_${seedName[p]}`] = f?.kind === 'lut' ? f.bits : 'none';
    out[`lut_${seedName[p]}_per_channel`] = f?.kind === 'lut' ? f.group : 'none';
  }
  out.weight_threshold = plan.weightThreshold;
  return out;
}
