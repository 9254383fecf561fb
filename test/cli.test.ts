import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, readFileSync, writeFileSync, truncateSync, statSync, mkdirSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const CLI = resolve('dist/src/cli/main.js');
const root = mkdtempSync(join(tmpdir(), 'lutra-cli-'));
const fixture = join(root, 'F');

function lutra(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
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
  assertOneLineError(lutra('generate', '--model', fixture, '--promt', 'x'), /Unknown option '--promt'/);
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
  assertOneLineError(
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

test.after(() => rmSync(root, { recursive: true, force: true }));
