// LoRA adapters in the PEFT layout: a folder with adapter_config.json (r, lora_alpha,
// target_modules, use_rslora, optional per-module rank_pattern / alpha_pattern) and
// adapter_model.safetensors holding, per adapted Linear, lora_A [r, in] and lora_B [out, r].
// The adapted weight is W + s·B·A with s = alpha / r (alpha / sqrt(r) with use_rslora).
// Everything is checked against the model's tensor manifest before use: every error names the
// file, field or tensor at fault.
import { existsSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { LutraError } from '../util/errors.js';
import { readJsonFile, normaliseTensorName } from '../io/checkpoint.js';
import { SafetensorsFile } from '../io/safetensors.js';
import { bf16ArrayToF32, f16ArrayToF32 } from '../util/half.js';
import type { TensorSpec } from '../arch/architecture.js';

/** One adapted matrix: delta = scale · B · A, A [rank, in], B [out, rank], f32. */
export interface LoraModule {
  /** The base weight it changes, e.g. `model.layers.3.self_attn.q_proj.weight`. */
  target: string;
  rank: number;
  scale: number;
  inFeatures: number;
  outFeatures: number;
  A: Float32Array;
  B: Float32Array;
}

export interface LoraAdapter {
  /** The folder it was read from. */
  dir: string;
  /** Short name (the folder's base name), as requests and reports call it. */
  name: string;
  rank: number;
  alpha: number;
  rslora: boolean;
  /** Keyed by target weight name. */
  modules: Map<string, LoraModule>;
}

/** An adapter and the weight it is blended with (`--lora DIR:0.7`). */
export interface LoraUse {
  adapter: LoraAdapter;
  weight: number;
}

const CONFIG = 'adapter_config.json';
const WEIGHTS = 'adapter_model.safetensors';
const PREFIX = 'base_model.model.';

/** `DIR` or `DIR:W` (W a finite number, default 1). A Windows-style drive letter is not a weight. */
export function parseLoraSpec(text: string, flag = '--lora'): { dir: string; weight: number } {
  const m = /^(.*):([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)$/i.exec(text);
  const dir = m ? m[1] : text;
  const weight = m ? Number(m[2]) : 1;
  if (dir === '') throw new LutraError(`${flag} ${JSON.stringify(text)}: expected DIR or DIR:WEIGHT (an adapter folder with ${CONFIG})`);
  if (!Number.isFinite(weight)) throw new LutraError(`${flag} ${JSON.stringify(text)}: weight ${m![2]} is not a finite number`);
  return { dir, weight };
}

function positiveNumber(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v) && v > 0;
}

/** PEFT's rule for a pattern key: it names the module by its full name or by a dotted suffix (a regex). */
function patternMatches(key: string, module: string): boolean {
  if (key === module || module.endsWith('.' + key)) return true;
  try {
    return new RegExp(`^(?:.*\\.)?(?:${key})$`).test(module);
  } catch {
    return false;
  }
}

/** The module names target_modules selects: a list of names (matched as the last dotted parts) or one regex over the full name. */
function targetMatcher(v: unknown, at: string): (module: string) => boolean {
  if (typeof v === 'string') {
    if (v === 'all-linear') return () => true;
    let re: RegExp;
    try {
      re = new RegExp(`^(?:${v})$`);
    } catch (e) {
      throw new LutraError(`${at}: target_modules ${JSON.stringify(v)} is not a valid regular expression (${(e as Error).message})`);
    }
    return (m) => re.test(m);
  }
  if (Array.isArray(v) && v.length > 0 && v.every((s) => typeof s === 'string' && s !== '')) {
    const names = v as string[];
    return (m) => names.some((n) => m === n || m.endsWith('.' + n));
  }
  throw new LutraError(`${at}: target_modules is ${JSON.stringify(v) ?? 'missing'}; expected a non-empty list of module names (e.g. ["q_proj", "v_proj"]) or a regular expression`);
}

function toF32(file: SafetensorsFile, name: string): Float32Array {
  const e = file.entries.get(name)!;
  const bytes = file.read(name);
  if (e.dtype === 'f32') return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4).slice();
  if (e.dtype === 'bf16') return bf16ArrayToF32(new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2));
  if (e.dtype === 'f16') return f16ArrayToF32(new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2));
  throw new LutraError(`${file.path}: tensor "${name}" has dtype ${e.dtype}; expected F32, F16 or BF16`);
}

/**
 * Read a PEFT LoRA adapter and check it against the model's manifest (`tensors`: what the
 * architecture reads; only matrices of the attention and feed-forward parts can be adapted).
 */
export function readLoraAdapter(dir: string, tensors: readonly TensorSpec[]): LoraAdapter {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new LutraError(`${dir}: LoRA adapter folder not found; expected a folder with ${CONFIG} and ${WEIGHTS} (PEFT's save_pretrained layout)`);
  }
  const cfgPath = join(dir, CONFIG);
  if (!existsSync(cfgPath)) throw new LutraError(`${cfgPath}: missing; a LoRA adapter folder needs ${CONFIG}`);
  const cfg = readJsonFile(cfgPath, 'the adapter config');
  if (cfg.peft_type !== undefined && cfg.peft_type !== 'LORA') throw new LutraError(`${cfgPath}: peft_type ${JSON.stringify(cfg.peft_type)}; only "LORA" adapters are supported`);
  const rank = cfg.r;
  if (!Number.isInteger(rank) || (rank as number) < 1) throw new LutraError(`${cfgPath}: r is ${JSON.stringify(rank) ?? 'missing'}; expected a positive integer (the adapter's rank)`);
  const alpha = cfg.lora_alpha ?? rank;
  if (!positiveNumber(alpha)) throw new LutraError(`${cfgPath}: lora_alpha is ${JSON.stringify(alpha)}; expected a positive number`);
  const rslora = cfg.use_rslora ?? false;
  if (typeof rslora !== 'boolean') throw new LutraError(`${cfgPath}: use_rslora is ${JSON.stringify(rslora)}; expected true or false`);
  if (cfg.use_dora === true) throw new LutraError(`${cfgPath}: use_dora is true; DoRA adapters are not supported (plain LoRA only)`);
  if (cfg.fan_in_fan_out === true) throw new LutraError(`${cfgPath}: fan_in_fan_out is true; Gemma's projections are Linear layers, expected false`);
  if (cfg.bias !== undefined && cfg.bias !== 'none') throw new LutraError(`${cfgPath}: bias is ${JSON.stringify(cfg.bias)}; expected "none" (Gemma's projections have no bias to train)`);
  const saved = cfg.modules_to_save;
  if (Array.isArray(saved) && saved.length > 0) throw new LutraError(`${cfgPath}: modules_to_save ${JSON.stringify(saved)}; fully trained modules beside the LoRA matrices are not supported`);
  const matches = targetMatcher(cfg.target_modules, cfgPath);
  const rankPattern = (cfg.rank_pattern ?? {}) as Record<string, unknown>;
  const alphaPattern = (cfg.alpha_pattern ?? {}) as Record<string, unknown>;
  for (const [field, pat] of [['rank_pattern', rankPattern], ['alpha_pattern', alphaPattern]] as const) {
    if (typeof pat !== 'object' || pat === null || Array.isArray(pat)) throw new LutraError(`${cfgPath}: ${field} is ${JSON.stringify(pat)}; expected an object of module name → number`);
  }
  let layers: Set<number> | null = null;
  if (cfg.layers_to_transform !== undefined && cfg.layers_to_transform !== null) {
    const lt = typeof cfg.layers_to_transform === 'number' ? [cfg.layers_to_transform] : cfg.layers_to_transform;
    if (!Array.isArray(lt) || !lt.every((x) => Number.isInteger(x) && x >= 0)) {
      throw new LutraError(`${cfgPath}: layers_to_transform is ${JSON.stringify(cfg.layers_to_transform)}; expected a layer index or a list of them`);
    }
    layers = new Set(lt as number[]);
  }

  const adaptable = new Map<string, TensorSpec>();
  for (const t of tensors) if ((t.part === 'attn' || t.part === 'ffn') && t.shape.length === 2) adaptable.set(t.name, t);

  const wPath = join(dir, WEIGHTS);
  if (!existsSync(wPath)) {
    const bin = join(dir, 'adapter_model.bin');
    if (existsSync(bin)) throw new LutraError(`${bin}: pickled PyTorch weights are not read; save the adapter with safe_serialization=True (${WEIGHTS})`);
    throw new LutraError(`${wPath}: missing; a LoRA adapter folder needs ${WEIGHTS}`);
  }
  const file = SafetensorsFile.open(wPath);
  const modules = new Map<string, LoraModule>();
  try {
    // Group the file's tensors by the module they adapt.
    const parts = new Map<string, { A?: string; B?: string }>();
    for (const name of file.entries.keys()) {
      const m = /^(.*)\.lora_(A|B)(?:\.[A-Za-z0-9_-]+)?\.weight$/.exec(name);
      if (!m) {
        const what = /lora_embedding_[AB]/.test(name) ? 'LoRA on embeddings is not supported' : 'expected <module>.lora_A.weight or <module>.lora_B.weight';
        throw new LutraError(`${wPath}: tensor "${name}": ${what}`);
      }
      const module = m[1].startsWith(PREFIX) ? m[1].slice(PREFIX.length) : m[1];
      const p = parts.get(module) ?? {};
      p[m[2] as 'A' | 'B'] = name;
      parts.set(module, p);
    }
    for (const [module, p] of parts) {
      const target = normaliseTensorName(module + '.weight');
      const spec = target === null ? undefined : adaptable.get(target);
      const some = p.A ?? p.B!;
      if (!spec) {
        throw new LutraError(`${wPath}: tensor "${some}" adapts "${module}", which is not an attention or feed-forward matrix of this model (${adaptable.size} are, e.g. ${[...adaptable.keys()][0]})`);
      }
      if (!matches(module)) throw new LutraError(`${wPath}: tensor "${some}": module "${module}" is not selected by ${CONFIG}'s target_modules ${JSON.stringify(cfg.target_modules)}`);
      if (!p.A || !p.B) throw new LutraError(`${wPath}: module "${module}" has lora_${p.A ? 'A' : 'B'} but no lora_${p.A ? 'B' : 'A'}; both are needed`);
      const key = Object.keys(rankPattern).find((k) => patternMatches(k, module));
      const r = key === undefined ? (rank as number) : rankPattern[key];
      if (!Number.isInteger(r) || (r as number) < 1) throw new LutraError(`${cfgPath}: rank_pattern["${key}"] is ${JSON.stringify(r)}; expected a positive integer`);
      const aKey = Object.keys(alphaPattern).find((k) => patternMatches(k, module));
      const a = aKey === undefined ? alpha : alphaPattern[aKey];
      if (!positiveNumber(a)) throw new LutraError(`${cfgPath}: alpha_pattern["${aKey}"] is ${JSON.stringify(a)}; expected a positive number`);
      const [out, inF] = spec.shape;
      const sa = file.entries.get(p.A)!.shape;
      const sb = file.entries.get(p.B)!.shape;
      if (sa.length !== 2 || sa[0] !== r || sa[1] !== inF) {
        throw new LutraError(`${wPath}: tensor "${p.A}" has shape [${sa.join(', ')}]; expected [${r}, ${inF}] (rank × ${target}'s input width)`);
      }
      if (sb.length !== 2 || sb[0] !== out || sb[1] !== r) {
        throw new LutraError(`${wPath}: tensor "${p.B}" has shape [${sb.join(', ')}]; expected [${out}, ${r}] (${target}'s output width × rank)`);
      }
      const scale = (a as number) / (rslora ? Math.sqrt(r as number) : (r as number));
      modules.set(target!, { target: target!, rank: r as number, scale, inFeatures: inF, outFeatures: out, A: toF32(file, p.A), B: toF32(file, p.B) });
    }
  } finally {
    file.close();
  }
  // Every module the config selects must be in the file (PEFT saves them all).
  for (const name of adaptable.keys()) {
    const module = name.slice(0, -'.weight'.length);
    const layer = /\.layers\.(\d+)\./.exec(module);
    if (layers && layer && !layers.has(Number(layer[1]))) continue;
    if (matches(module) && !modules.has(name)) {
      throw new LutraError(`${wPath}: no lora_A/lora_B for "${module}", which ${CONFIG}'s target_modules ${JSON.stringify(cfg.target_modules)} selects`);
    }
  }
  if (modules.size === 0) throw new LutraError(`${wPath}: holds no LoRA tensors`);
  return { dir, name: basename(resolve(dir)), rank: rank as number, alpha: alpha as number, rslora, modules };
}

/** Σ weight · scale · B·A for one target, as f32 [out, in] (for merging into a weight). */
export function loraDelta(uses: readonly LoraUse[], target: string): Float32Array | null {
  let delta: Float32Array | null = null;
  for (const { adapter, weight } of uses) {
    const m = adapter.modules.get(target);
    if (!m || weight === 0) continue;
    const { rank: r, inFeatures: I, outFeatures: O, A, B } = m;
    delta ??= new Float32Array(O * I);
    const s = weight * m.scale;
    const acc = new Float64Array(I);
    for (let o = 0; o < O; o++) {
      acc.fill(0);
      for (let k = 0; k < r; k++) {
        const b = B[o * r + k];
        if (b === 0) continue;
        for (let i = 0; i < I; i++) acc[i] += b * A[k * I + i];
      }
      for (let i = 0; i < I; i++) delta[o * I + i] += s * acc[i];
    }
  }
  return delta;
}
