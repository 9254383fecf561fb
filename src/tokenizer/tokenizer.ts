// The checkpoint's own tokenizer.json and chat template, through @huggingface/tokenizers and
// @huggingface/jinja. Guarantees exactly one <bos> and knows the stop tokens.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';
import { LutraError } from '../util/errors.js';
import { readJsonFile } from '../io/checkpoint.js';

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export class GemmaTokenizer {
  readonly bosId: number;
  readonly stopIds: Set<number>;
  private template: Template | null;
  private bosToken: string;

  private constructor(private hf: HfTokenizer, config: Record<string, unknown>, templateSource: string | null, extraStops: number[], readonly dir: string) {
    this.bosToken = typeof config.bos_token === 'string' ? config.bos_token : '<bos>';
    const bos = hf.token_to_id(this.bosToken);
    if (bos === undefined) throw new LutraError(`${dir}: tokenizer has no ${this.bosToken} token`);
    this.bosId = bos;
    this.stopIds = new Set(extraStops);
    for (const t of ['<eos>', '<end_of_turn>']) {
      const id = hf.token_to_id(t);
      if (id !== undefined) this.stopIds.add(id);
    }
    try {
      this.template = templateSource ? new Template(templateSource) : null;
    } catch (e) {
      throw new LutraError(`${dir}: chat template does not parse (${(e as Error).message})`);
    }
  }

  /** Load tokenizer.json, tokenizer_config.json and chat_template.jinja (preferred) from a model folder. */
  static load(dir: string, extraStops: number[] = []): GemmaTokenizer {
    const tokPath = join(dir, 'tokenizer.json');
    if (!existsSync(tokPath)) throw new LutraError(`${tokPath}: missing; the model needs the tokenizer.json it was trained with (a package converted from a GGUF gets one with lutra convert --tokenizer DIR)`);
    const tokJson = readJsonFile(tokPath, 'the tokenizer');
    const cfgPath = join(dir, 'tokenizer_config.json');
    const cfg = existsSync(cfgPath) ? readJsonFile(cfgPath, 'the tokenizer config') : {};
    const jinjaPath = join(dir, 'chat_template.jinja');
    const templateSource = existsSync(jinjaPath)
      ? readFileSync(jinjaPath, 'utf8')
      : typeof cfg.chat_template === 'string'
        ? cfg.chat_template
        : null;
    return GemmaTokenizer.fromJson(tokJson, cfg, templateSource, extraStops, dir, tokPath);
  }

  /**
   * A tokenizer from an in-memory tokenizer.json and tokenizer config (e.g. rebuilt from a GGUF's
   * metadata). `dir` names the model in errors; `what` names the tokenizer's source.
   */
  static fromJson(tokJson: Record<string, unknown>, cfg: Record<string, unknown>, templateSource: string | null, extraStops: number[], dir: string, what = dir): GemmaTokenizer {
    let hf: HfTokenizer;
    try {
      hf = new HfTokenizer(tokJson, cfg);
    } catch (e) {
      throw new LutraError(`${what}: not a usable tokenizer (${(e as Error).message})`);
    }
    return new GemmaTokenizer(hf, cfg, templateSource, extraStops, dir);
  }

  get hasChatTemplate(): boolean {
    return this.template !== null;
  }

  tokenId(token: string): number | undefined {
    return this.hf.token_to_id(token);
  }

  /** Encode text with exactly one leading <bos> (kept if the text already starts with it). */
  encode(text: string, { bos = true }: { bos?: boolean } = {}): number[] {
    const ids = this.hf.encode(text, { add_special_tokens: false }).ids;
    if (!bos) return ids;
    let start = 0;
    while (start < ids.length && ids[start] === this.bosId) start++;
    return [this.bosId, ...ids.slice(start)];
  }

  /** Render the chat template (system text folded into the first turn by Gemma's template). */
  renderChat(messages: ChatMessage[], addGenerationPrompt = true): string {
    if (!this.template) throw new LutraError(`${this.dir}: the tokenizer has no chat template; use --raw`);
    try {
      return this.template.render({ messages, bos_token: this.bosToken, add_generation_prompt: addGenerationPrompt });
    } catch (e) {
      throw new LutraError(`chat template: ${(e as Error).message}`);
    }
  }

  encodeChat(messages: ChatMessage[], addGenerationPrompt = true): number[] {
    return this.encode(this.renderChat(messages, addGenerationPrompt));
  }

  decode(ids: number[], skipSpecial = true): string {
    return this.hf.decode(ids, { skip_special_tokens: skipSpecial });
  }
}

/** Turns a growing list of ids into text pieces, holding back incomplete UTF-8 sequences. */
export class StreamDecoder {
  private ids: number[] = [];
  private emitted = 0;
  constructor(private tok: GemmaTokenizer) {}

  push(id: number): string {
    this.ids.push(id);
    const text = this.tok.decode(this.ids);
    if (text.endsWith('\uFFFD')) return '';
    const piece = text.slice(this.emitted);
    this.emitted = text.length;
    return piece;
  }
}
