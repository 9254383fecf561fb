// The wasm arena's allocator: blocks never overlap, reused bytes are zero, freed neighbours merge
// and a free block at the top goes back to the bump pointer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Arena } from '../src/backend/wasm/arena.js';
import { prng } from '../src/runtime/sampler.js';

test('random allocate/free sequences: no overlap, zeroed reuse, everything freed returns the high-water mark to the start', () => {
  const arena = new Arena(1 << 16);
  const start = arena.used;
  const rand = prng(42);
  const live = new Map<number, number>();
  const u8 = () => new Uint8Array(arena.memory.buffer);
  let peak = start;
  for (let step = 0; step < 4000; step++) {
    if (live.size === 0 || rand() < 0.55) {
      const n = 1 + Math.floor(rand() * (rand() < 0.1 ? 200_000 : 3000));
      const align = [16, 64, 256][Math.floor(rand() * 3)];
      const at = arena.bytes(n, align);
      assert.equal(at % align, 0);
      const mem = u8();
      for (let i = at; i < at + n; i += 97) assert.equal(mem[i], 0, 'fresh bytes are zero');
      assert.equal(mem[at + n - 1], 0);
      for (const [b, m] of live) assert.ok(at + n <= b || b + m <= at, `[${at}, ${at + n}) overlaps [${b}, ${b + m})`);
      mem.fill(0xab, at, at + n);
      live.set(at, n);
    } else {
      const keys = [...live.keys()];
      const at = keys[Math.floor(rand() * keys.length)];
      arena.release(at);
      live.delete(at);
    }
    peak = Math.max(peak, arena.used);
  }
  for (const at of [...live.keys()]) arena.release(at);
  assert.equal(arena.used, start, 'all freed: the bump pointer is back where it started');
  assert.equal(arena.live, 0);
  assert.throws(() => arena.release(start), /not a live block/);
});

test('a freed block is reused by the next allocation of the same size', () => {
  const arena = new Arena(1 << 16);
  const a = arena.bytes(10_000);
  const b = arena.bytes(10_000);
  const top = arena.used;
  arena.release(a);
  assert.equal(arena.bytes(10_000), a);
  assert.equal(arena.used, top);
  arena.release(b);
  assert.ok(arena.used < top, 'the top block went back to the bump pointer');
});
