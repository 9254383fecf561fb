// Interruption and atomic outputs: commands killed while writing (SIGINT, SIGTERM, SIGKILL) leave no
// partial output and no temporary files once the next run or `lutra clean` has been; outputs that
// exist are refused or replaced whole (--force); two runs into one --out never merge.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { tinyFixture } from './helpers.js';
import { PendingOutput, sweepStale, liveTemps, writeOutput } from '../src/util/atomic-output.js';
import { LutraError } from '../src/util/errors.js';
import { encodeTensor, encodeTensorAsync } from '../src/quant/convert.js';
import { parseFormat } from '../src/model/formats.js';
import { PackageSource } from '../src/io/package.js';
import { readGguf, readTensorBytes, encodeQ4_0 } from '../src/io/gguf.js';
import { Checkpoint } from '../src/io/checkpoint.js';
import { dequantize } from '../src/backend/reference/index.js';
import type { WeightTensor } from '../src/model/weight.js';

const CLI = resolve('dist/src/cli/main.js');
const fx = await tinyFixture(0);
const root = mkdtempSync(join(tmpdir(), 'lutra-faults-'));
const TEMP = /\.lutra-(tmp|old)-\d+$/;
const temps = (dir: string) => readdirSync(dir).filter((n) => TEMP.test(n));

function lutra(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

interface Running {
  child: ChildProcess;
  stderr: () => string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function start(...args: string[]): Running {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((ok) => child.on('close', (code, signal) => ok({ code, signal })));
  return { child, stderr: () => err, exit };
}

/** Waits until the run has started writing: its temporary name shows up in `dir`. */
async function startedWriting(run: Running, dir: string): Promise<string> {
  const t0 = Date.now();
  for (;;) {
    const found = existsSync(dir) ? readdirSync(dir).find((n) => n.endsWith(`.lutra-tmp-${run.child.pid}`)) : undefined;
    if (found) return found;
    if (run.child.exitCode !== null) assert.fail(`the run ended (${run.child.exitCode}) before it wrote anything: ${run.stderr()}`);
    if (Date.now() - t0 > 60_000) assert.fail('no temporary output after 60 s');
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** SIGINT once writing: exit 130, one line on stderr, nothing at `out`, no temporary left in `dir`. */
async function interruptCleanly(dir: string, out: string, ...args: string[]) {
  const run = start(...args);
  await startedWriting(run, dir);
  run.child.kill('SIGINT');
  const { code, signal } = await run.exit;
  assert.equal(signal, null, 'the handler exits; the signal does not kill');
  assert.equal(code, 130, run.stderr());
  assert.equal(run.stderr(), 'lutra: interrupted (SIGINT); removed the partial output\n');
  assert.equal(existsSync(out), false, `${out} exists after the interruption`);
  assert.deepEqual(temps(dir), []);
}

/** SIGKILL once writing: the temporary is left behind (the next run or lutra clean removes it). */
async function killHard(dir: string, ...args: string[]): Promise<string> {
  const run = start(...args);
  const name = await startedWriting(run, dir);
  run.child.kill('SIGKILL');
  assert.equal((await run.exit).signal, 'SIGKILL');
  assert.ok(existsSync(join(dir, name)), 'SIGKILL cannot clean up');
  return name;
}

test('fixture: SIGINT removes the partial checkpoint; after SIGKILL, lutra clean removes the leftover', async () => {
  const dir = join(root, 'fixture');
  mkdirSync(dir);
  const out = join(dir, 'f270');
  await interruptCleanly(dir, out, 'fixture', '--shape', 'gemma-3-270m', '--out', out);
  const left = await killHard(dir, 'fixture', '--shape', 'gemma-3-270m', '--out', out);
  writeFileSync(join(dir, 'keep.txt'), 'not ours');
  const c = lutra('clean', dir);
  assert.equal(c.code, 0, c.stderr);
  assert.equal(c.stdout, `removed ${join(dir, left)}\n`);
  assert.equal(c.stderr, `lutra clean: 1 leftover(s) in ${dir}\n`);
  assert.deepEqual(readdirSync(dir), ['keep.txt']);
  assert.equal(lutra('clean', dir).stderr, `lutra clean: nothing to remove in ${dir}\n`);
  const bad = lutra('clean', join(dir, 'keep.txt'));
  assert.equal(bad.code, 1);
  assert.equal(bad.stderr, `lutra: error: ${join(dir, 'keep.txt')}: not a folder\n`);
});

test('convert: SIGINT during a lut4 conversion leaves nothing; SIGKILL leaves a temporary that the next run into the folder removes', async () => {
  const dir = join(root, 'convert');
  mkdirSync(dir);
  const out = join(dir, 'pkg');
  const args = ['convert', '--model', fx.dir, '--out', out, '--quant', 'all=lut4:4'];
  await interruptCleanly(dir, out, ...args);
  await killHard(dir, ...args);
  // Another conversion into the same folder sweeps the dead run's temporary before it writes.
  const r = lutra('convert', '--model', fx.dir, '--out', join(dir, 'int8'), '--quant', 'all=int8:32');
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(readdirSync(dir), ['int8']);
  const pkg = new PackageSource(join(dir, 'int8'));
  try {
    assert.equal(pkg.format('model.layers.0.mlp.up_proj.weight').kind, 'int8');
    assert.equal(pkg.load('model.embed_tokens.weight').data.byteLength, 262144 * 64);
  } finally {
    pkg.close();
  }
});

test('export-gguf: SIGTERM exits 143 and removes the partial file; after SIGKILL the same command runs to a complete file', async () => {
  const dir = join(root, 'gguf');
  mkdirSync(dir);
  const out = join(dir, 'tiny.gguf');
  const args = ['export-gguf', '--model', fx.dir, '--out', out, '--type', 'q4_0'];
  const run = start(...args);
  await startedWriting(run, dir);
  run.child.kill('SIGTERM');
  assert.deepEqual(await run.exit, { code: 143, signal: null });
  assert.equal(run.stderr(), 'lutra: interrupted (SIGTERM); removed the partial output\n');
  assert.deepEqual(readdirSync(dir), []);
  await interruptCleanly(dir, out, ...args);

  await killHard(dir, ...args);
  const r = lutra(...args);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(readdirSync(dir), ['tiny.gguf']);
  // Complete and valid; the embedding, encoded in pieces, is the Q4_0 encoding of the whole tensor.
  const g = readGguf(out);
  assert.equal(g.tensors.length, 8 * 13 + 2);
  const ck = Checkpoint.open(fx.dir);
  try {
    const want = encodeQ4_0(dequantize(ck.load('model.embed_tokens.weight')));
    assert.ok(Buffer.from(readTensorBytes(g, g.tensorsByName.get('token_embd.weight')!)).equals(want));
  } finally {
    ck.close();
  }
});

test('sweep: SIGINT removes the packages being measured; after SIGKILL the same command completes and leaves no temporary', async () => {
  const dir = join(root, 'sweep');
  const cfg = join(root, 'sweep.yaml');
  const data = join(root, 'sweep.jsonl');
  writeFileSync(cfg, '- name: q8\n  quant: [all=int8:32]\n');
  writeFileSync(data, '{"id": "a", "prompt": "Hello there"}\n');
  const args = ['sweep', '--model', fx.dir, '--configs', cfg, '--dataset', data, '--out-dir', dir, '--max-tokens', '3', '--no-timing', '--no-template'];
  const run = start(...args);
  await startedWriting(run, dir);
  run.child.kill('SIGINT');
  assert.deepEqual(await run.exit, { code: 130, signal: null });
  assert.equal(run.stderr(), 'lutra: interrupted (SIGINT); removed the partial output\n');
  assert.deepEqual(readdirSync(dir), []);

  await killHard(dir, ...args);
  const r = lutra(...args);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(readdirSync(dir).sort(), ['sweep.json', 'sweep.md']);
  const json = JSON.parse(readFileSync(join(dir, 'sweep.json'), 'utf8'));
  assert.equal(json.complete, true);
  assert.equal(json.rows[0].error, null);
});

test('an existing --out is refused, or replaced whole with --force; two converts into one --out do not merge', async () => {
  const dir = join(root, 'exists');
  mkdirSync(dir);
  const pkg = join(dir, 'pkg');
  const gguf = join(dir, 'm.gguf');
  assert.equal(lutra('convert', '--model', fx.dir, '--out', pkg, '--quant', 'all=int8:32').code, 0);
  const again = lutra('convert', '--model', fx.dir, '--out', pkg, '--quant', 'ffn=int4:32');
  assert.equal(again.code, 1);
  assert.equal(again.stderr, `lutra: error: --out ${pkg}: already exists; choose a new path or pass --force to replace it\n`);
  const forced = lutra('convert', '--model', fx.dir, '--out', pkg, '--quant', 'ffn=int4:32', '--force');
  assert.equal(forced.code, 0, forced.stderr);
  const p = new PackageSource(pkg);
  assert.equal(p.format('model.layers.0.mlp.up_proj.weight').kind, 'int4');
  assert.equal(p.format('model.layers.0.self_attn.q_proj.weight').kind, 'bf16');
  p.close();

  assert.equal(lutra('export-gguf', '--model', fx.dir, '--out', gguf, '--type', 'f16').code, 0);
  const size = statSync(gguf).size;
  const refused = lutra('export-gguf', '--model', fx.dir, '--out', gguf, '--type', 'q8_0');
  assert.equal(refused.stderr, `lutra: error: --out ${gguf}: already exists; choose a new path or pass --force to replace it\n`);
  assert.equal(statSync(gguf).size, size);
  assert.equal(lutra('export-gguf', '--model', fx.dir, '--out', gguf, '--type', 'q8_0', '--force').code, 0);
  assert.ok(statSync(gguf).size < size);
  assert.deepEqual(temps(dir), []);

  // Started together: one package wins, the other run fails on one line naming --out and removes its temporary.
  const both = join(dir, 'both');
  const runs = [start('convert', '--model', fx.dir, '--out', both, '--quant', 'all=int8:32'), start('convert', '--model', fx.dir, '--out', both, '--quant', 'all=int4:32')];
  const ends = await Promise.all(runs.map((r) => r.exit));
  assert.deepEqual(ends.map((e) => e.code).sort(), [0, 1], runs.map((r) => r.stderr()).join(''));
  const loser = runs[ends.findIndex((e) => e.code === 1)];
  assert.match(loser.stderr(), new RegExp(`^lutra: error: --out ${both}: (another run wrote it while this one was working; this output was discarded|already exists)[^\\n]*\\n$`));
  const winner = ends.findIndex((e) => e.code === 0);
  const b = new PackageSource(both);
  assert.equal(b.format('model.layers.0.mlp.up_proj.weight').kind, winner === 0 ? 'int8' : 'int4');
  b.close();
  assert.deepEqual(temps(dir), []);
});

test('PendingOutput: an output that appears meanwhile is not overwritten; --force swaps a folder only when the new one is complete', () => {
  const dir = join(root, 'pending');
  mkdirSync(dir);
  const out = join(dir, 'o');
  const p = new PendingOutput(out, { flag: '--out', forceFlag: true, kind: 'dir' });
  mkdirSync(p.path);
  writeFileSync(join(p.path, 'x'), 'mine');
  assert.ok(liveTemps().includes(p.path));
  mkdirSync(out);
  writeFileSync(join(out, 'x'), 'theirs');
  assert.throws(() => p.commit(), (e: unknown) => e instanceof LutraError && /^--out .*\/o: another run wrote it while this one was working/.test(e.message));
  assert.equal(readFileSync(join(out, 'x'), 'utf8'), 'theirs');
  assert.ok(!liveTemps().includes(p.path));

  const f = join(dir, 'f.txt');
  const q = new PendingOutput(f, { kind: 'file' });
  writeFileSync(q.path, 'mine');
  writeFileSync(f, 'theirs');
  assert.throws(() => q.commit(), /f\.txt: another run wrote it/);
  assert.equal(readFileSync(f, 'utf8'), 'theirs');

  // --force: the old folder stays whole until the new one is complete, then is replaced.
  const r = new PendingOutput(out, { force: true, kind: 'dir' });
  mkdirSync(r.path);
  writeFileSync(join(r.path, 'x'), 'new');
  assert.equal(readFileSync(join(out, 'x'), 'utf8'), 'theirs');
  r.commit();
  assert.equal(readFileSync(join(out, 'x'), 'utf8'), 'new');
  assert.deepEqual(temps(dir), []);
});

test('a write error of a nested output names the final output, not a temporary; an error about another file passes unchanged', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lutra-nested-'));
  try {
    const out = join(dir, 'pkg');
    // As writePackage writes its shards: an inner output inside the outer one's temporary folder.
    const full = writeOutput(out, { flag: '--out', kind: 'dir' }, async (tmp) => {
      mkdirSync(tmp);
      await writeOutput(join(tmp, 'shard.safetensors'), { force: true, kind: 'file' }, (t) => {
        throw Object.assign(new Error(`ENOSPC: no space left on device, write`), { code: 'ENOSPC', path: t });
      });
    });
    await assert.rejects(full, (e: unknown) => {
      assert.ok(e instanceof LutraError, String(e));
      assert.equal(e.message, `${join(out, 'shard.safetensors')}: cannot write (ENOSPC)`);
      return true;
    });
    const source = writeOutput(join(dir, 'x.gguf'), { flag: '--out', kind: 'file' }, () => {
      throw Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO', path: '/some/source.safetensors' });
    });
    await assert.rejects(source, /^Error: EIO: i\/o error, read$/);
    assert.deepEqual(readdirSync(dir), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the stale sweep removes temporaries of dead processes only, and puts back a folder whose replacement was cut short', () => {
  const dir = join(root, 'stale');
  mkdirSync(dir);
  const dead = spawnSync(process.execPath, ['-e', '']).pid!;
  mkdirSync(join(dir, `.pkg.lutra-tmp-${dead}`));
  writeFileSync(join(dir, `.m.gguf.lutra-tmp-${dead}`), 'x');
  writeFileSync(join(dir, `.live.lutra-tmp-${process.pid}`), 'x');
  mkdirSync(join(dir, `.kept.lutra-old-${dead}`)); // killed between its two renames: "kept" is missing
  writeFileSync(join(dir, `.kept.lutra-old-${dead}`, 'x'), 'old');
  writeFileSync(join(dir, '.other.tmp-1'), 'x'); // an earlier lutra's name: only lutra clean looks at these
  const done = sweepStale(dir);
  assert.deepEqual(done.map((d) => `${d.action} ${d.path.slice(dir.length + 1)}`).sort(), [
    `removed .m.gguf.lutra-tmp-${dead}`, `removed .pkg.lutra-tmp-${dead}`, 'restored kept',
  ]);
  assert.deepEqual(readdirSync(dir).sort(), ['.live.lutra-tmp-' + process.pid, '.other.tmp-1', 'kept']);
  assert.equal(readFileSync(join(dir, 'kept', 'x'), 'utf8'), 'old');
});

test('large tensors encoded in pieces (so Ctrl-C is handled) give the bytes of encoding them whole', async () => {
  const rows = 4100;
  const cols = 1024; // 4.2M weights: two pieces
  const x = new Float32Array(rows * cols);
  let s = 1;
  for (let i = 0; i < x.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    x[i] = (s / 2 ** 32 - 0.5) * (1 + (i % 7));
  }
  const w: WeightTensor = { name: 'w', shape: [rows, cols], format: { kind: 'f32' }, data: new Uint8Array(x.buffer), source: 'test' };
  for (const f of ['lut2:4', 'int4:32', 'int8:c', 'int8:t', 'f16']) {
    const target = parseFormat(f, 'test');
    const a = encodeTensor(w, target);
    const b = await encodeTensorAsync(w, target);
    assert.ok(Buffer.from(b.data).equals(Buffer.from(a.data)), `${f}: codes`);
    assert.deepEqual(b.scales, a.scales, `${f}: scales`);
    assert.deepEqual(b.table, a.table, `${f}: table`);
  }
});

test.after(() => {
  fx.cleanup();
  rmSync(root, { recursive: true, force: true });
});
