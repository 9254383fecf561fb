import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { resolve } from 'node:path';
import { tinyFixture } from './helpers.js';

const CLI = resolve('dist/src/cli/main.js');
const fx = await tinyFixture(0);

function chat(args: string[]) {
  const child = spawn(process.execPath, [CLI, 'chat', '--model', fx.dir, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const done = new Promise<number>((r) => child.on('close', (code) => r(code ?? -1)));
  const waitFor = async (pred: () => boolean, ms = 60000) => {
    const t0 = Date.now();
    while (!pred()) {
      if (Date.now() - t0 > ms) throw new Error(`timed out; stdout so far: ${out}\nstderr: ${err}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  return { child, done, waitFor, out: () => out, err: () => err, kill: () => child.kill('SIGKILL') };
}

test('chat answers each turn, /reset clears, end of input exits', async () => {
  const c = chat(['--max-tokens', '4', '--seed', '3', '--stats']);
  try {
    await c.waitFor(() => c.out().includes('> '));
    c.child.stdin.write('Hello there\n');
    await c.waitFor(() => (c.err().match(/generated \d+ tokens/g) ?? []).length === 1);
    c.child.stdin.write('And again?\n');
    await c.waitFor(() => (c.err().match(/generated \d+ tokens/g) ?? []).length === 2);
    // The second turn reuses the cache: at least the whole first prompt stays cached.
    const prefills = [...c.err().matchAll(/prefill: (\d+) tokens/g)].map((m) => Number(m[1]));
    const reused = [...c.err().matchAll(/reused (\d+) cached tokens/g)].map((m) => Number(m[1]));
    assert.equal(reused[0], 0);
    assert.ok(reused[1] >= prefills[0], `second turn reused ${reused[1]} tokens, the first prompt had ${prefills[0]}`);
    c.child.stdin.write('/reset\n');
    await c.waitFor(() => c.out().includes('(history cleared)'));
    c.child.stdin.end();
    assert.equal(await c.done, 0);
  } finally {
    c.kill();
  }
});

test('Ctrl-C interrupts the answer, not the program', async () => {
  const c = chat(['--max-tokens', '100000', '--context', '2048']);
  try {
    await c.waitFor(() => c.out().includes('> '));
    c.child.stdin.write('Tell me everything\n');
    const before = c.out().length;
    await c.waitFor(() => c.out().length > before + 20); // a few tokens streamed
    c.child.kill('SIGINT');
    await c.waitFor(() => c.out().includes('[interrupted]'));
    c.child.stdin.write('Still there?\n');
    const mark = c.out().length;
    await c.waitFor(() => c.out().length > mark + 20); // the program is alive and answering
    c.child.kill('SIGINT'); // interrupt the second answer too
    await c.waitFor(() => c.out().split('[interrupted]').length >= 3);
    c.child.stdin.end();
    assert.equal(await c.done, 0);
  } finally {
    c.kill();
  }
});

test.after(() => fx.cleanup());
