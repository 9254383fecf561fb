import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Sampler } from '../src/runtime/sampler.js';

function logitsFrom(probs: number[], size = probs.length): Float32Array {
  const l = new Float32Array(size).fill(-1e9);
  probs.forEach((p, i) => (l[i] = Math.log(p)));
  return l;
}

function histogram(s: Sampler, logits: Float32Array, n: number): Map<number, number> {
  const h = new Map<number, number>();
  for (let i = 0; i < n; i++) {
    const id = s.sample(logits);
    h.set(id, (h.get(id) ?? 0) + 1);
  }
  return h;
}

const probs = [0.4, 0.3, 0.15, 0.1, 0.05];

test('greedy picks the argmax', () => {
  assert.equal(new Sampler().sample(Float32Array.from([0.1, 3, -2, 2.9])), 1);
});

test('the same seed gives the same sequence; another seed a different one', () => {
  const l = logitsFrom(probs);
  const run = (seed: number) => {
    const s = new Sampler({ temperature: 1, seed });
    return Array.from({ length: 50 }, () => s.sample(l));
  };
  const a = run(1);
  const b = run(1);
  const c = run(2);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
});

test('temperature 1 samples the distribution (chi-square within bounds)', () => {
  const h = histogram(new Sampler({ temperature: 1, seed: 3 }), logitsFrom(probs), 20000);
  let chi = 0;
  probs.forEach((p, i) => (chi += ((h.get(i) ?? 0) - p * 20000) ** 2 / (p * 20000)));
  assert.ok(chi < 18.5, `chi-square ${chi} (4 dof, p=0.001 is 18.5)`);
});

test('top-k, top-p and min-p cut the tail', () => {
  const l = logitsFrom(probs);
  assert.deepEqual([...histogram(new Sampler({ temperature: 1, topK: 2, seed: 1 }), l, 2000).keys()].sort(), [0, 1]);
  // top-p 0.8: 0.4 + 0.3 + 0.15 = 0.85 ≥ 0.8 → three tokens.
  assert.deepEqual([...histogram(new Sampler({ temperature: 1, topP: 0.8, seed: 1 }), l, 3000).keys()].sort(), [0, 1, 2]);
  // min-p 0.3: keep p ≥ 0.12 → 0.4, 0.3, 0.15.
  assert.deepEqual([...histogram(new Sampler({ temperature: 1, minP: 0.3, seed: 1 }), l, 3000).keys()].sort(), [0, 1, 2]);
  assert.deepEqual([...histogram(new Sampler({ temperature: 1, topK: 1, seed: 9 }), l, 200).keys()], [0]);
});

test('repetition penalty turns the greedy choice away from seen tokens', () => {
  const l = Float32Array.from([2.0, 1.9, -1]);
  assert.equal(new Sampler().sample(l, [0]), 0);
  assert.equal(new Sampler({ repetitionPenalty: 1.3 }).sample(l, [0]), 1);
  // Negative logits get multiplied (pushed further down).
  const neg = Float32Array.from([-1.0, -1.1]);
  assert.equal(new Sampler({ repetitionPenalty: 1.3 }).sample(neg, [0]), 1);
});

test('ids at or above 262144 are never sampled', () => {
  const l = new Float32Array(262208).fill(-5);
  l[262150] = 100;
  l[17] = 1;
  assert.equal(new Sampler().sample(l), 17);
  const h = histogram(new Sampler({ temperature: 5, seed: 4 }), l, 200);
  assert.ok([...h.keys()].every((id) => id < 262144));
});

test('bad sampling values are refused by flag name', () => {
  assert.throws(() => new Sampler({ topP: 0 }), /topP 0 is out of range/);
  assert.throws(() => new Sampler({ temperature: -1 }), /temperature -1 is out of range/);
});
