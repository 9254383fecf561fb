// Reading and checking config.json fields, shared by every architecture's config resolution.
import { LutraError } from '../util/errors.js';

export type Json = Record<string, unknown>;

/** A numeric field, or `fallback` when absent or null. */
export function num(src: Json, key: string, fallback: number, file: string): number {
  const v = src[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    throw new LutraError(`${file}: field "${key}" must be a number, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** eos_token_id: one id or a non-empty array of ids. */
export function tokenIds(v: unknown, fallback: number[], file: string): number[] {
  if (v === undefined || v === null) return fallback;
  if (typeof v === 'number') return [v];
  if (Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'number')) return v as number[];
  throw new LutraError(`${file}: field "eos_token_id" is ${JSON.stringify(v)}; expected a token id or a non-empty array of token ids`);
}

export function checkInt(file: string, key: string, v: number, min: number, max: number): void {
  if (!Number.isInteger(v) || v < min || v > max) {
    const range = max === Infinity ? `an integer ≥ ${min}` : `an integer in [${min}, ${max}]`;
    throw new LutraError(`${file}: ${key} is ${v}; expected ${range}`);
  }
}

export function checkPositive(file: string, key: string, v: number): void {
  if (!(v > 0) || !Number.isFinite(v)) throw new LutraError(`${file}: ${key} is ${v}; expected a finite number > 0`);
}


/**
 * GGUF stores float hparams as f32: 1e-6 comes back as 9.99999997e-7. The shortest decimal that
 * rounds to the same f32 is what the original config.json said (and what HF computes with).
 */
export function shortestF32(x: number): number {
  for (let p = 1; p <= 9; p++) {
    const d = Number(x.toPrecision(p));
    if (Math.fround(d) === Math.fround(x)) return d;
  }
  return x;
}

/**
 * Upper bounds far above any Gemma 3 or 4 (27B / 31B: 60–62 layers, hidden 5376, MLP 21 504,
 * vocab 262 208), low enough that a damaged config is refused before it sizes an allocation.
 */
export const SIZE_LIMITS = {
  vocab_size: 2 ** 22,
  hidden_size: 2 ** 16,
  intermediate_size: 2 ** 18,
  num_hidden_layers: 1024,
  num_attention_heads: 1024,
  num_key_value_heads: 1024,
  head_dim: 2 ** 12,
  sliding_window: 2 ** 24,
  max_position_embeddings: 2 ** 24,
};
