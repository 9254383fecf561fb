import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeFixture } from '../src/model/fixture.js';
import { writeOverflowFixture } from '../src/fp16/overflow-fixture.js';

/** A fresh tiny fixture in a temporary folder; call cleanup() when done. */
export async function tinyFixture(seed = 0): Promise<{ dir: string; root: string; cleanup: () => void }> {
  const root = mkdtempSync(join(tmpdir(), 'lutra-test-'));
  const dir = join(root, 'tiny');
  await writeFixture(dir, 'tiny', seed);
  return { dir, root, cleanup: () => rmSync(root, { recursive: true, force: true }) };
}

export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Index of the largest value (the top-1 token of a logit row). */
export function argmax(a: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i] > a[best]) best = i;
  return best;
}

/** Deterministic pseudo-random token ids in [lo, hi). */
export function tokenSequence(n: number, seed: number, lo = 5, hi = 262000): number[] {
  let s = seed >>> 0;
  const out: number[] = [2];
  while (out.length < n) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out.push(lo + (s % (hi - lo)));
  }
  return out;
}

/** The tiny fixture (seed 0) with its residual stream raised to ~2e5 at layer 3: an fp16 overflow fixture. */
export async function overflowFixture(out: string): Promise<string> {
  await writeOverflowFixture(out, 'tiny', 0, 2e5);
  return out;
}
