// The configs file of `lutra sweep`: a YAML list of named quantization configurations.
//
//   - name: lut4-4+head6
//     quant: [attn=lut4:4, ffn=lut4:4, lmhead=lut6:4]     # --quant PART=FORMAT entries
//   - name: seed-best
//     lut2: 4,4                                           # or ANEMLL's --lut1/--lut2/--lut3 B[,G]
//     lut3: 6,4
//   - name: fp16-alpha
//     quant: [all=f16]
//     fp16-scale: auto                                    # auto | α in (0, 1]
//     numerics: fp16                                      # f32 (default) | fp16[,accumulate=fp16][,clamp]
//
// The file's shape (a list of mappings, known keys, value types, unique names) is checked here and
// a mistake stops the sweep with the file and entry named. Whether a FORMAT or α is valid is left
// to the conversion, so a bad one becomes a failed row of the table instead.
import { readFileSync } from 'node:fs';
import YAML from 'yaml';
import { LutraError } from '../util/errors.js';
import { numericsName, parseNumerics } from '../fp16/numerics.js';

export interface SweepConfig {
  name: string;
  /** `PART=FORMAT` entries, as `lutra convert --quant`. */
  quant: string[];
  lut1?: string;
  lut2?: string;
  lut3?: string;
  /** 'auto' or the text of α (checked at conversion). */
  fp16Scale: string;
  /** A --numerics spec (f32, fp16, fp16,accumulate=fp16, fp16,clamp), normalised. */
  numerics: string;
}

const KEYS = ['name', 'quant', 'lut1', 'lut2', 'lut3', 'fp16-scale', 'numerics'];

export function parseSweepConfigs(text: string, file: string): SweepConfig[] {
  let doc: unknown;
  try {
    doc = YAML.parse(text);
  } catch (e) {
    throw new LutraError(`${file}: not valid YAML (${(e as Error).message.split('\n')[0]})`);
  }
  if (!Array.isArray(doc) || doc.length === 0) throw new LutraError(`${file}: expected a non-empty YAML list of configurations ({name, quant: [PART=FORMAT, ...]})`);
  const seen = new Set<string>();
  return doc.map((entry: unknown, i) => {
    let where = `${file}: entry ${i + 1}`;
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) throw new LutraError(`${where}: expected a mapping with name and quant`);
    const o = entry as Record<string, unknown>;
    if (typeof o.name !== 'string' || !/^[A-Za-z0-9][\w.+-]*$/.test(o.name)) {
      // The name becomes a folder name, so keep it to a safe alphabet.
      throw new LutraError(`${where}: "name" must be a string of letters, digits and . _ + - (got ${JSON.stringify(o.name)})`);
    }
    where += ` ("${o.name}")`;
    if (seen.has(o.name)) throw new LutraError(`${where}: the name is already used by an earlier entry`);
    seen.add(o.name);
    const unknown = Object.keys(o).filter((k) => !KEYS.includes(k));
    if (unknown.length) throw new LutraError(`${where}: unknown key "${unknown[0]}"; expected ${KEYS.join(', ')}`);
    let quant: string[] = [];
    if (o.quant !== undefined && o.quant !== null) {
      const q = typeof o.quant === 'string' ? [o.quant] : o.quant;
      if (!Array.isArray(q) || !q.every((x) => typeof x === 'string')) throw new LutraError(`${where}: "quant" must be a list of PART=FORMAT strings, e.g. [ffn=lut4:4]`);
      quant = q;
    }
    const cfg: SweepConfig = { name: o.name, quant, fp16Scale: '1', numerics: 'f32' };
    for (const k of ['lut1', 'lut2', 'lut3'] as const) {
      if (o[k] === undefined) continue;
      // YAML reads `lut2: 4` as a number and `lut2: 4,4` as a string; both are what --lut2 takes.
      if (typeof o[k] !== 'string' && typeof o[k] !== 'number') throw new LutraError(`${where}: "${k}" must be BITS[,GROUP], e.g. 4,4`);
      cfg[k] = String(o[k]);
    }
    if (cfg.quant.length === 0 && !cfg.lut1 && !cfg.lut2 && !cfg.lut3) {
      throw new LutraError(`${where}: no quantization given; add quant: [PART=FORMAT, ...] or lut1/lut2/lut3 (use quant: [all=bf16] to keep bf16)`);
    }
    const a = o['fp16-scale'];
    if (a !== undefined) {
      if (a !== 'auto' && typeof a !== 'number') throw new LutraError(`${where}: "fp16-scale" must be auto or a number α in (0, 1] (got ${JSON.stringify(a)})`);
      cfg.fp16Scale = String(a);
    }
    if (o.numerics !== undefined) {
      if (typeof o.numerics !== 'string') throw new LutraError(`${where}: "numerics" must be f32 or fp16 (got ${JSON.stringify(o.numerics)})`);
      cfg.numerics = numericsName(parseNumerics(o.numerics, `${where}: "numerics"`));
    }
    return cfg;
  });
}

export function readSweepConfigs(path: string): SweepConfig[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new LutraError(`${path}: cannot read the configs file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  return parseSweepConfigs(text, path);
}

/** The configuration as `lutra convert` flags, for the table and the record. */
export function convertFlags(c: SweepConfig): string {
  const parts = c.quant.map((q) => `--quant ${q}`);
  for (const k of ['lut1', 'lut2', 'lut3'] as const) if (c[k] !== undefined) parts.push(`--${k} ${c[k]}`);
  if (c.fp16Scale !== '1') parts.push(`--fp16-scale ${c.fp16Scale}`);
  if (c.numerics !== 'f32') parts.push(`--numerics ${c.numerics}`);
  return parts.join(' ');
}
