// The prompt of generate and compare: --prompt TEXT, --prompt - (standard input) or --prompt-file FILE.
import { readFileSync } from 'node:fs';
import type { Flags, OptionSpec } from './common.js';
import { LutraError } from '../util/errors.js';

export const PROMPT_OPTIONS: Record<string, OptionSpec> = {
  prompt: { type: 'string', short: 'p', arg: 'TEXT', help: 'the prompt; - reads it from standard input' },
  'prompt-file': { type: 'string', arg: 'FILE', help: 'read the prompt from FILE (UTF-8)' },
};

/** True when the command was given a prompt by either flag. */
export function hasPrompt(flags: Flags): boolean {
  return flags.has('prompt') || flags.has('prompt-file');
}

/**
 * The prompt text from --prompt or --prompt-file; one trailing newline of a file or of standard
 * input is dropped (as `echo` and editors add one). Exactly one of the two flags must be given.
 */
export function readPrompt(flags: Flags, cmd: string): string {
  const text = flags.optionalString('prompt');
  const file = flags.optionalString('prompt-file');
  if (text !== undefined && file !== undefined) throw new LutraError(`lutra ${cmd}: give --prompt or --prompt-file, not both`);
  if (file === undefined) {
    if (text === undefined) throw new LutraError(`lutra ${cmd}: --prompt is required (or --prompt-file FILE, or --prompt - to read standard input)`);
    if (text !== '-') return text;
  }
  const where = file === undefined ? '--prompt -' : `--prompt-file ${file}`;
  let raw: string;
  try {
    raw = readFileSync(file ?? 0, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new LutraError(`${where}: no such file; expected a text file holding the prompt`);
    if (code === 'EISDIR') throw new LutraError(`${where}: is a directory; expected a text file holding the prompt`);
    throw new LutraError(`${where}: cannot read (${code ?? (e as Error).message})`);
  }
  const prompt = raw.replace(/\r?\n$/, '');
  if (prompt === '') throw new LutraError(`${where}: ${file === undefined ? 'standard input was empty' : 'the file is empty'}; expected the prompt text`);
  return prompt;
}
