// Option objects of the library API: a misspelt key (maxToken for maxTokens) is an error naming the
// key and the nearest known one, not silently ignored.
import { LutraError } from './errors.js';
import type { GenerateOptions } from '../runtime/generate.js';

/** Every key of GenerateOptions (sampling included): requests of every kind. The compiler checks the list is complete. */
export const GENERATE_KEYS = Object.keys({
  maxTokens: 1, stop: 1, signal: 1, speculative: 1, temperature: 1, topK: 1, topP: 1, minP: 1, repetitionPenalty: 1, seed: 1, maxTokenId: 1,
} satisfies Record<keyof GenerateOptions, 1>);

/** Throws when `opts` has a key outside `known`; `what` names the call (e.g. "complete options"). */
export function checkOptionKeys(opts: unknown, known: readonly string[], what: string): void {
  if (opts === undefined) return;
  if (typeof opts !== 'object' || opts === null || Array.isArray(opts)) throw new LutraError(`${what}: expected an object`);
  for (const key of Object.keys(opts)) {
    if (known.includes(key)) continue;
    const near = nearest(key, known);
    throw new LutraError(`${what}: unknown option ${JSON.stringify(key)}${near ? `; did you mean ${near}?` : ''} (known: ${known.join(', ')})`);
  }
}

/** The known key within edit distance 2 of `key` (case ignored), if one is. */
function nearest(key: string, known: readonly string[]): string | undefined {
  let best: string | undefined, bestD = 3;
  for (const k of known) {
    const d = editDistance(key.toLowerCase(), k.toLowerCase());
    if (d < bestD) [best, bestD] = [k, d];
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length];
}

/** An AbortSignal, or undefined; anything else is an error naming `what`. */
export function checkSignal(signal: unknown, what = 'signal'): void {
  if (signal === undefined) return;
  const s = signal as { aborted?: unknown; addEventListener?: unknown };
  if (typeof s !== 'object' || s === null || typeof s.aborted !== 'boolean' || typeof s.addEventListener !== 'function') {
    throw new LutraError(`${what}: expected an AbortSignal (e.g. new AbortController().signal), got ${typeof signal === 'object' ? String(signal) : JSON.stringify(signal)}`);
  }
}
