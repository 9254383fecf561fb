// `lutra attention`: every layer's and head's attention map on one prompt, as an HTML page, with the
// per-head figures (entropy, mass on <bos>, mean distance) on stdout or as JSON.
import type { Command } from './common.js';
import { MODEL_OPTIONS } from './common.js';
import { PROMPT_OPTIONS, readPrompt } from './prompt.js';
import { openModel } from './model-flags.js';
import { attentionMaps, type AttentionReport } from '../analysis/attention.js';
import { attentionHtml } from '../analysis/attention-html.js';
import { checkParentDir, writeFileAtomic } from '../util/atomic-output.js';
import { LutraError } from '../util/errors.js';

const { context: _c, 'prefill-batch': _p, 'on-overflow': _o, kv: _kv, ...OPTIONS } = MODEL_OPTIONS;

export const attentionCommand: Command = {
  name: 'attention',
  summary: 'attention maps of every layer and head on a prompt (HTML), with entropy, <bos> mass and distance per head',
  usage: 'lutra attention [-m PATH] (-p TEXT | --prompt-file FILE) [--out FILE.html] [--json] [--chat] [--lora DIR[:W]]',
  options: {
    ...OPTIONS,
    ...PROMPT_OPTIONS,
    out: { type: 'string', short: 'o', arg: 'FILE', help: 'write the HTML page here', default: 'attention.html' },
    json: { type: 'boolean', help: 'print the per-layer, per-head figures as JSON on stdout (add --maps for the maps too)' },
    maps: { type: 'boolean', help: 'with --json: include every [T, T] map (large)' },
    chat: { type: 'boolean', help: 'wrap the prompt in the chat template as a user turn (default: plain text after <bos>)' },
    'max-tokens': { type: 'string', short: 'n', arg: 'N', help: 'refuse prompts longer than N tokens (a map is N × N per head)', default: '1024' },
  },
  notes:
    'Maps are rebuilt in float64 from the queries and keys the model computes (after q/k norm and RoPE) in one\n' +
    'prefill pass: row q is softmax(q·kᵀ·scale) over the keys it may see, zero outside the sliding window on\n' +
    'local layers. Entropy and distance are means over queries; "mass on <bos>" is the mean probability on\n' +
    'position 0 (the attention sink).',
  run(flags) {
    const text = readPrompt(flags, 'attention');
    const limit = flags.number('max-tokens', 1024, { integer: true, min: 2 });
    if (flags.bool('maps') && !flags.bool('json')) throw new LutraError('--maps needs --json');
    const out = flags.string('out', 'attention.html');
    checkParentDir(out, `--out ${out}`);
    const { model, tokenizer, dir, lora } = openModel(flags, { announce: !flags.bool('json') });
    try {
      const ids = flags.bool('chat') ? tokenizer.encodeChat([{ role: 'user', content: text }], true) : tokenizer.encode(text, { bos: true });
      if (ids.length > limit) throw new LutraError(`the prompt is ${ids.length} tokens; --max-tokens allows ${limit}`);
      const r = attentionMaps(model, ids, lora);
      const tokens = ids.map((id) => tokenizer.decode([id], false));
      writeFileAtomic(out, attentionHtml(r, `lutra attention: ${dir}${lora ? ` + LoRA ${lora.label}` : ''}`, tokens));
      if (flags.bool('json')) process.stdout.write(JSON.stringify(toJson(r, tokens, flags.bool('maps'))) + '\n');
      else process.stdout.write(render(r) + `\nwrote ${out}\n`);
    } finally {
      model.backend.dispose?.();
    }
  },
};

function toJson(r: AttentionReport, tokens: string[], maps: boolean) {
  return {
    tokens: r.tokens,
    ids: r.ids,
    pieces: tokens,
    summary: r.summary,
    layers: r.layers.map((l) => ({ layer: l.layer, sliding: l.sliding, window: l.window, heads: l.heads, ...(maps ? { maps: l.maps.map((m) => Array.from(m)) } : {}) })),
  };
}

function render(r: AttentionReport): string {
  const f = (x: number, d = 3) => x.toFixed(d);
  const lines = [`${r.tokens} tokens; per layer, each head's entropy (nats) / mass on <bos> / mean distance:`];
  for (const l of r.layers) {
    lines.push(`  layer ${String(l.layer).padStart(2)} ${l.sliding ? `sliding ${l.window}` : 'global    '}  ` + l.heads.map((h) => `${f(h.entropy, 2)}/${f(h.sinkMass, 2)}/${f(h.meanDistance, 1)}`).join('  '));
  }
  for (const [name, s] of [['sliding', r.summary.sliding], ['global', r.summary.global]] as const) {
    if (s) lines.push(`${name} layers: entropy ${f(s.entropy)}, mass on <bos> ${f(s.sinkMass)}, mean distance ${f(s.meanDistance, 1)}`);
  }
  return lines.join('\n');
}
