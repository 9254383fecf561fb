// Prompt datasets for `lutra compare`: ANEMLL's harness format (ANEMLL `_read_prompts`), read
// one line at a time. A line starting with `{` is a JSON object whose prompt is `prompt`, else
// `text`, else `input`; every other field (id, category, risk, ...) is carried into the results.
// Any other non-blank line is a raw prompt. Blank lines are skipped. A line that starts with `{`
// but is not a JSON object with a prompt string is an error naming the file and line number.
import { readFileSync } from 'node:fs';
import { LutraError } from '../util/errors.js';

export interface PromptItem {
  /** The `id` field, or `line-N` (N = 1-based line number) when there is none. */
  id: string;
  prompt: string;
  /** 1-based line in the dataset file (0 for a prompt given on the command line). */
  line: number;
  /** Every other field of the JSON line, carried into the results unchanged. */
  fields: Record<string, unknown>;
}

const PROMPT_KEYS = ['prompt', 'text', 'input'] as const;

export function parseDataset(text: string, file = 'dataset'): PromptItem[] {
  const items: PromptItem[] = [];
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  const seen = new Set<string>();
  lines.forEach((raw, i) => {
    const line = i + 1;
    const s = raw.trim();
    if (s === '') return;
    let item: PromptItem;
    if (s.startsWith('{')) {
      let obj: unknown;
      try {
        obj = JSON.parse(s);
      } catch (e) {
        throw new LutraError(`${file}:${line}: malformed JSON line (${(e as Error).message})`);
      }
      if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) throw new LutraError(`${file}:${line}: expected a JSON object`);
      const o = obj as Record<string, unknown>;
      const key = PROMPT_KEYS.find((k) => o[k] !== undefined);
      if (key === undefined) throw new LutraError(`${file}:${line}: no "prompt", "text" or "input" field`);
      const prompt = o[key];
      if (typeof prompt !== 'string' || prompt.trim() === '') throw new LutraError(`${file}:${line}: "${key}" must be a non-empty string`);
      const fields: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(o)) if (k !== key && k !== 'id') fields[k] = v;
      let id = `line-${line}`;
      if (o.id !== undefined) {
        if (typeof o.id !== 'string' && typeof o.id !== 'number') throw new LutraError(`${file}:${line}: "id" must be a string or a number`);
        id = String(o.id);
      }
      item = { id, prompt, line, fields };
    } else {
      item = { id: `line-${line}`, prompt: raw.trimEnd(), line, fields: {} };
    }
    if (seen.has(item.id)) throw new LutraError(`${file}:${line}: id "${item.id}" already used by an earlier line`);
    seen.add(item.id);
    items.push(item);
  });
  if (items.length === 0) throw new LutraError(`${file}: no prompts (every line is blank)`);
  return items;
}

export function readDataset(path: string): PromptItem[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new LutraError(`${path}: cannot read the dataset (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  return parseDataset(text, path);
}
