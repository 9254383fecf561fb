import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, readFileSync, writeFileSync, truncateSync, statSync, mkdirSync, cpSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const CLI = resolve('dist/src/cli/main.js');
const root = mkdtempSync(join(tmpdir(), 'lutra-cli-'));
const fixture = join(root, 'F');

function lutra(...args: string[]) {
  return lutraWithInput(undefined, ...args);
}

/** Run the CLI with `input` on standard input (undefined: none). */
function lutraWithInput(input: string | undefined, ...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', input });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A failing command must print exactly one line on stderr, naming what was wrong. */
function assertOneLineError(r: ReturnType<typeof lutra>, pattern: RegExp) {
  assert.equal(r.code, 1, `exit code; stderr: ${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `expected one line, got:\n${r.stderr}`);
  assert.match(lines[0], /^lutra: error: /);
  assert.match(lines[0], pattern);
}

/**
 * An error found while the weights are read (after the folder and headers were checked): the
 * loading line, then exactly one error line.
 */
function assertErrorAfterLoading(r: ReturnType<typeof lutra>, pattern: RegExp) {
  assert.equal(r.code, 1, `exit code; stderr: ${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 2, `expected the loading line and one error line, got:\n${r.stderr}`);
  assert.match(lines[0], /^loading .* \((wasm, \d+ threads?|reference)\)\.\.\.$/);
  assert.match(lines[1], /^lutra: error: /);
  assert.match(lines[1], pattern);
}

test('lutra fixture then generate: 16 tokens, the same twice for the same seed', () => {
  const f = lutra('fixture', '--out', fixture);
  assert.equal(f.code, 0, f.stderr);
  const a = lutra('generate', '--model', fixture, '--prompt', 'Hello', '--max-tokens', '16', '--seed', '1');
  assert.equal(a.code, 0, a.stderr);
  assert.match(a.stderr, /generated 16 tokens/);
  assert.match(a.stderr, /prefill: \d+ tokens in [\d.]+ s \([\d.]+ tok\/s\)/);
  assert.match(a.stderr, /decode: 15 steps in [\d.]+ s \([\d.]+ tok\/s\)/);
  const b = lutra('generate', '--model', fixture, '--prompt', 'Hello', '--max-tokens', '16', '--seed', '1');
  assert.equal(a.stdout, b.stdout);
  assert.ok(a.stdout.trim().length > 0);
  // Sampling with a seed is deterministic as well.
  const c = lutra('generate', '--model', fixture, '--prompt', 'Hello', '--max-tokens', '8', '--seed', '5', '--temperature', '1.5', '--quiet');
  const d = lutra('generate', '--model', fixture, '--prompt', 'Hello', '--max-tokens', '8', '--seed', '5', '--temperature', '1.5', '--quiet');
  assert.equal(c.stdout, d.stdout);
  assert.equal(c.stderr, '');
});

test('--help tells the options; unknown flags and commands are one-line errors', () => {
  const h = lutra('generate', '--help');
  assert.equal(h.code, 0);
  for (const flag of ['--model', '--prompt', '--max-tokens', '--temperature', '--seed', '--raw', '--top-k', '--top-p', '--min-p', '--repetition-penalty']) {
    assert.ok(h.stdout.includes(flag), `help lacks ${flag}`);
  }
  assertOneLineError(lutra('generate', '--model', fixture, '--promt', 'x'), /unknown option --promt \(see lutra generate --help\)/);
  assertOneLineError(lutra('generate', '--model', fixture, '--prompt'), /--prompt needs a value/);
  // Arguments that are not flags: refused where the command reads none, so a model path given
  // without --model cannot silently run the default model instead.
  assertOneLineError(lutra('convert', fixture, '--out', join(root, 'never')), /unexpected argument ".*": every input is a flag; to run on that model, pass --model /);
  assert.ok(!existsSync(join(root, 'never')));
  assertOneLineError(lutra('generate', '--model', fixture, '-p', 'Tell', 'me'), /unexpected argument "me".*quote a prompt/);
  assertOneLineError(lutra('frobnicate'), /unknown command "frobnicate"/);
  assertOneLineError(lutra('generate', '--model', fixture, '--prompt', 'x', '--max-tokens', 'ten'), /--max-tokens "ten": expected an integer/);
});

test('a missing model folder or file is named', () => {
  assertOneLineError(lutra('generate', '--model', join(root, 'nope'), '--prompt', 'x'), /nope: model directory not found/);
  const noWeights = join(root, 'noweights');
  mkdirSync(noWeights);
  writeFileSync(join(noWeights, 'config.json'), readFileSync(join(fixture, 'config.json')));
  assertOneLineError(lutra('generate', '--model', noWeights, '--prompt', 'x'), /noweights: no model\.safetensors/);
  const noConfig = join(root, 'noconfig');
  mkdirSync(noConfig);
  assertOneLineError(lutra('generate', '--model', noConfig, '--prompt', 'x'), /noconfig\/config\.json: missing/);
});

test('a config that is not Gemma 3 is named', () => {
  const d = join(root, 'llama');
  cpSync(fixture, d, { recursive: true });
  const cfg = JSON.parse(readFileSync(join(d, 'config.json'), 'utf8'));
  cfg.model_type = 'llama';
  writeFileSync(join(d, 'config.json'), JSON.stringify(cfg));
  assertOneLineError(lutra('generate', '--model', d, '--prompt', 'x'), /llama\/config\.json: model_type is "llama"/);
});

test('a tensor with the wrong shape is named with the expected shape', () => {
  const d = join(root, 'shape');
  cpSync(fixture, d, { recursive: true });
  const cfg = JSON.parse(readFileSync(join(d, 'config.json'), 'utf8'));
  cfg.intermediate_size = 200;
  writeFileSync(join(d, 'config.json'), JSON.stringify(cfg));
  assertErrorAfterLoading(
    lutra('generate', '--model', d, '--prompt', 'x'),
    /shape\/model\.safetensors: tensor "model\.layers\.0\.mlp\.gate_proj\.weight" has shape \[192,64\], expected \[200,64\]/,
  );
});

test('a truncated safetensors file is named', () => {
  const d = join(root, 'trunc');
  cpSync(fixture, d, { recursive: true });
  const file = join(d, 'model.safetensors');
  truncateSync(file, statSync(file).size - 1000);
  assertOneLineError(lutra('generate', '--model', d, '--prompt', 'x'), /trunc\/model\.safetensors: truncated: tensor ".*" ends at byte \d+ but the file has \d+ bytes/);
  truncateSync(file, 4);
  assertOneLineError(lutra('generate', '--model', d, '--prompt', 'x'), /trunc\/model\.safetensors: file is 4 bytes/);
});

test('short flags: -m -p -n -s -t -c do what the long ones do, and --help shows them', () => {
  const long = lutra('generate', '--model', fixture, '--prompt', 'Hello', '--max-tokens', '6', '--seed', '3', '--temperature', '1', '--threads', '1', '--context', '64', '--quiet');
  assert.equal(long.code, 0, long.stderr);
  const short = lutra('generate', '-m', fixture, '-p', 'Hello', '-n', '6', '-s', '3', '--temperature', '1', '-t', '1', '-c', '64', '--quiet');
  assert.equal(short.code, 0, short.stderr);
  assert.equal(short.stdout, long.stdout);
  assert.ok(short.stdout.trim().length > 0);
  // A different seed through -s changes the sampled text: the short flag is not ignored.
  const other = lutra('generate', '-m', fixture, '-p', 'Hello', '-n', '6', '-s', '4', '--temperature', '1', '--quiet');
  assert.notEqual(other.stdout, long.stdout);
  // -n is applied: the stats count the tokens.
  const n3 = lutra('generate', '-m', fixture, '-p', 'Hello', '-n', '3');
  assert.match(n3.stderr, /generated 3 tokens/);
  const help = lutra('generate', '--help').stdout;
  for (const f of ['-m, --model PATH', '-p, --prompt TEXT', '-n, --max-tokens N', '-t, --threads N', '-c, --context N', '-s, --seed N', '--prompt-file FILE', '-h, --help']) {
    assert.ok(help.includes(f), `generate --help lacks "${f}"`);
  }
  assert.ok(lutra('compare', '--help').stdout.includes('-p, --prompt TEXT'));
  assertOneLineError(lutra('generate', '-m', fixture, '-p', 'x', '-n', 'ten'), /--max-tokens "ten": expected an integer/);
});

test('--prompt - reads standard input and --prompt-file a file; one trailing newline dropped', () => {
  const args = ['-m', fixture, '-n', '8', '--raw', '--quiet'];
  const direct = lutra('generate', ...args, '-p', 'Hello world');
  assert.equal(direct.code, 0, direct.stderr);
  const piped = lutraWithInput('Hello world\n', 'generate', ...args, '-p', '-');
  assert.equal(piped.code, 0, piped.stderr);
  assert.equal(piped.stdout, direct.stdout);
  const file = join(root, 'prompt.txt');
  writeFileSync(file, 'Hello world\n');
  const fromFile = lutra('generate', ...args, '--prompt-file', file);
  assert.equal(fromFile.code, 0, fromFile.stderr);
  assert.equal(fromFile.stdout, direct.stdout);
  // The newline is part of the prompt only when it is not the last character.
  writeFileSync(file, 'Hello world\n\n');
  assert.notEqual(lutra('generate', ...args, '--prompt-file', file).stdout, direct.stdout);

  assertOneLineError(lutra('generate', ...args, '--prompt-file', join(root, 'missing.txt')), /--prompt-file .*missing\.txt: no such file/);
  assertOneLineError(lutra('generate', ...args, '--prompt-file', root), /--prompt-file .*: is a directory/);
  assertOneLineError(lutra('generate', ...args, '-p', 'x', '--prompt-file', file), /lutra generate: give --prompt or --prompt-file, not both/);
  assertOneLineError(lutraWithInput('', 'generate', ...args, '-p', '-'), /--prompt -: standard input was empty/);
  assertOneLineError(lutra('generate', ...args), /lutra generate: --prompt is required/);
  writeFileSync(file, '');
  assertOneLineError(lutra('generate', ...args, '--prompt-file', file), /--prompt-file .*prompt\.txt: the file is empty/);
  // compare takes the prompt the same ways, and counts --prompt-file among its prompt sources.
  writeFileSync(file, 'Hello world\n');
  const c = lutra('compare', fixture, '--reference', fixture, '--prompt-file', file, '-n', '2', '--backend', 'reference');
  assert.equal(c.code, 0, c.stderr);
  assert.match(c.stdout, /ALL \(1\)/);
  assertOneLineError(lutra('compare', fixture, '--reference', fixture, '-p', 'x', '--prompt-file', file), /give exactly one of --prompt, --prompt-file, --prompt-ids, --dataset/);
});

test('lutra --version and -v print the package version', () => {
  const pkg = JSON.parse(readFileSync(resolve('package.json'), 'utf8'));
  for (const flag of ['--version', '-v']) {
    const r = lutra(flag);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `lutra ${pkg.version}\n`);
    assert.match(r.stdout, /^lutra \d+\.\d+\.\d+/);
  }
});

test('a loading line on stderr while the model loads, then the stats with the load time; none with --quiet', () => {
  const r = lutra('generate', '-m', fixture, '-p', 'Hello', '-n', '2', '-t', '2');
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines[0], `loading ${fixture} (wasm, 2 threads)...`);
  assert.match(lines.at(-1)!, /^\[wasm, loaded in [\d.]+ s\] prefill: /);
  const one = lutra('generate', '-m', fixture, '-p', 'Hello', '-n', '2', '-t', '1');
  assert.equal(one.stderr.split('\n')[0], `loading ${fixture} (wasm, 1 thread)...`);
  const ref = lutra('generate', '-m', fixture, '-p', 'Hello', '-n', '2', '--backend', 'reference');
  assert.equal(ref.stderr.split('\n')[0], `loading ${fixture} (reference)...`);
  const quiet = lutra('generate', '-m', fixture, '-p', 'Hello', '-n', '2', '--quiet');
  assert.equal(quiet.code, 0, quiet.stderr);
  assert.equal(quiet.stderr, '');
  // chat announces the load as well, and its banner has the load time.
  const chat = lutraWithInput('', 'chat', '-m', fixture, '-t', '1');
  assert.equal(chat.code, 0, chat.stderr);
  const cl = chat.stderr.trim().split('\n');
  assert.equal(cl[0], `loading ${fixture} (wasm, 1 thread)...`);
  assert.match(cl[1], /^lutra chat: .* on wasm, 1 thread, loaded in [\d.]+ s, context \d+ tokens/);
  // compare names each model and backend before loading it.
  const c = lutra('compare', fixture, '--reference', fixture, '-p', 'Hello', '-n', '2', '-t', '1');
  assert.equal(c.code, 0, c.stderr);
  assert.match(c.stderr, new RegExp(`^loading candidate ${fixture} \\(wasm, 1 thread\\)\\.\\.\\.\\nloading reference ${fixture} \\(wasm, 1 thread\\)\\.\\.\\.\\n`));
  assert.match(c.stdout, /\(lutra, wasm backend\) vs reference .* \(lutra, wasm backend\)/);
  assert.match(c.stdout, /models loaded in [\d.]+ s/);
});

test('a closed stdout ends generate quietly; an output folder blocked by a file is named before any work', async () => {
  // `lutra generate … | head -c 8`: the reader goes away after the first bytes.
  const child = spawn(process.execPath, [CLI, 'generate', '-m', fixture, '-p', 'Hello', '--raw', '-n', '400', '-t', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  child.stdout.once('data', () => child.stdout.destroy());
  const code = await new Promise<number | null>((done) => child.on('close', (c) => done(c)));
  assert.equal(code, 0, stderr);
  // The loading line and the statistics, which say why it stopped: nothing else (no EPIPE trace).
  assert.match(stderr, /^loading \S+ \(wasm, 1 thread\)\.\.\.\n\[wasm, loaded in [\d.]+ s\] prefill: .*; stopped by output closed\n$/);
  // The command's own status survives a closed stdout: a failing gate still fails.
  const gate = spawn(process.execPath, [CLI, 'compare', fixture, '--reference', fixture, '-p', 'Hello', '-n', '2', '-t', '1', '--gate', 'kl<-1'], { stdio: ['ignore', 'pipe', 'pipe'] });
  gate.stdout.destroy();
  let gateErr = '';
  gate.stderr.on('data', (d) => (gateErr += d));
  assert.equal(await new Promise<number | null>((done) => gate.on('close', (c) => done(c))), 1, gateErr);
  assert.match(gateErr, /lutra: error: gate failed/);
  const blocker = join(root, 'a-file');
  writeFileSync(blocker, 'x');
  assertOneLineError(lutra('attention', '-m', fixture, '-p', 'hi', '--out', join(blocker, 'maps', 'a.html')), /--out .*a-file\/maps\/a\.html: cannot create its folder .* \(a file is in the way\)/);
  // A new folder is made, as convert and compare make theirs.
  const made = join(root, 'new', 'deeper', 'a.html');
  const r = lutra('attention', '-m', fixture, '-p', 'hi', '--out', made, '-t', '1');
  assert.equal(r.code, 0, r.stderr);
  assert.ok(existsSync(made));
});

test.after(() => rmSync(root, { recursive: true, force: true }));
