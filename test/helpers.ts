import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeFixture } from '../src/model/fixture.js';
import { Checkpoint } from '../src/io/checkpoint.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import { f32ToBf16Bits } from '../src/util/half.js';

/** A fresh tiny fixture in a temporary folder; call cleanup() when done. */
export function tinyFixture(seed = 0): { dir: string; root: string; cleanup: () => void } {
  const root = mkdtempSync(join(tmpdir(), 'lutra-test-'));
  const dir = join(root, 'tiny');
  writeFixture(dir, 'tiny', seed);
  return { dir, root, cleanup: () => rmSync(root, { recursive: true, force: true }) };
}

export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
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

/**
 * A copy of a fixture whose layer `layer` post-FFN gain is ~3e4 on every channel, so the residual
 * stream passes fp16's 65 504 there (real Gemma 3 overflows through large norm gains too).
 */
export function overflowFixture(src: string, out: string, layer = 3): string {
  const ck = Checkpoint.open(src);
  mkdirSync(out);
  const big = `model.layers.${layer}.post_feedforward_layernorm.weight`;
  writeSafetensors(join(out, 'model.safetensors'), ck.names().map((name) => ({
    name, dtype: 'bf16' as const, shape: ck.shape(name),
    bytes: () => (name !== big ? ck.load(name).data : new Uint8Array(Uint16Array.from({ length: ck.shape(name)[0] }, (_, i) => f32ToBf16Bits(i % 2 ? 29999 : 39999)).buffer)),
  })));
  for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(src, f), join(out, f));
  ck.close();
  return out;
}
