#!/usr/bin/env node
// lutra's command-line entry: dispatch to one command per file, print input errors on one line.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from './common.js';
import { helpText, PACKAGE_ROOT, parseFlags, stdoutClosed } from './common.js';
import { LutraError } from '../util/errors.js';
import { removeLiveTemps } from '../util/atomic-output.js';
import { generateCommand } from './generate.js';
import { chatCommand } from './chat.js';
import { fixtureCommand } from './fixture.js';
import { exportGgufCommand } from './export-gguf.js';
import { convertCommand } from './convert.js';
import { compareCommand } from './compare.js';
import { auditFp16Command } from './audit-fp16.js';
import { inspectCommand } from './inspect.js';
import { benchCommand } from './bench.js';
import { sweepCommand } from './sweep.js';
import { serveCommand } from './serve.js';
import { cleanCommand } from './clean.js';
import { attentionCommand } from './attention.js';
import { diffCommand } from './diff.js';

const COMMANDS: Command[] = [generateCommand, chatCommand, serveCommand, fixtureCommand, convertCommand, exportGgufCommand, compareCommand, inspectCommand, attentionCommand, diffCommand, auditFp16Command, sweepCommand, benchCommand, cleanCommand];

function usage(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length)) + 4;
  return [
    'lutra: convert, quantize, run and verify Gemma models in TypeScript',
    '',
    'usage: lutra <command> [options]     (lutra <command> --help for its options; lutra --version)',
    '',
    'commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}${c.summary}`),
    '',
    'Commands that take --model default to the shipped demo model (models/demo).',
  ].join('\n');
}

/** The version in the package.json next to dist/. */
function version(): string {
  const file = join(PACKAGE_ROOT, 'package.json');
  let v: unknown;
  try {
    v = (JSON.parse(readFileSync(file, 'utf8')) as { version?: unknown }).version;
  } catch (e) {
    throw new LutraError(`${file}: cannot read the version (${(e as Error).message.split('\n')[0]})`);
  }
  if (typeof v !== 'string') throw new LutraError(`${file}: no "version" string`);
  return v;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage() + '\n');
    return name ? 0 : 1;
  }
  if (name === '--version' || name === '-v') {
    process.stdout.write(`lutra ${version()}\n`);
    return 0;
  }
  const cmd = COMMANDS.find((c) => c.name === name);
  if (!cmd) throw new LutraError(`unknown command "${name}"; commands: ${COMMANDS.map((c) => c.name).join(', ')}`);
  const { flags, positionals, help } = parseFlags(cmd, rest);
  if (help) {
    process.stdout.write(helpText(cmd) + '\n');
    return 0;
  }
  return (await cmd.run(flags, positionals)) ?? 0;
}

// A closed stdout (`lutra generate … | head`): later writes are dropped, generation stops (the
// commands listen to stdoutClosed), and the command ends with its own status, so a failing gate
// still fails. Another write error (a full disk) is one line; partial outputs are removed.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') {
    process.stdout.write = (() => true) as typeof process.stdout.write;
    stdoutClosed.abort();
    return;
  }
  removeLiveTemps();
  process.stderr.write(`lutra: error: cannot write to standard output (${e.code ?? e.message})\n`);
  process.exit(1);
});

main(process.argv.slice(2)).then(
  (code) => {
    if (process.exitCode === undefined) process.exitCode = code;
  },
  (e: unknown) => {
    if (e instanceof LutraError) {
      process.stderr.write(`lutra: error: ${e.message}\n`);
    } else {
      process.stderr.write(`lutra: internal error: ${(e as Error)?.message ?? e}\n`);
      if (process.env.LUTRA_DEBUG) process.stderr.write(`${(e as Error)?.stack}\n`);
      else process.stderr.write('(set LUTRA_DEBUG=1 for the stack trace)\n');
    }
    process.exitCode = 1;
  },
);
