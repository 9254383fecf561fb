// The checkpoint's own tokenizer.json and chat template, through @huggingface/tokenizers and
// @huggingface/jinja. Guarantees exactly one <bos> and knows the stop tokens.
//
// Stop tokens come from the files: the ids the model config lists as eos (given by the caller),
// the tokenizer config's eos_token, <eos>, and the token that closes a turn in the chat template
// (Gemma 3's <end_of_turn>, Gemma 4's <turn|>), found by rendering a one-message conversation.
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

/**
 * Turn-closing tokens of the Gemma families (3: <end_of_turn>, 4: <turn|>), stops of a tokenizer
 * whose chat template does not show its own (no template, or one that does not render a plain
 * user message).
 */
const TURN_END_FALLBACK = ['<end_of_turn>', '<turn|>'];

/** Text of the probe message: no special-token syntax, unchanged by a template's trim. */
const PROBE_TEXT = 'lutra probe 7f3a';

/** A special-token setting of tokenizer_config.json: a string, or an object with "content". */
function tokenText(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null && typeof (v as Record<string, unknown>).content === 'string') return (v as Record<string, string>).content;
  return undefined;
}

export class GemmaTokenizer {
  readonly bosId: number;
  readonly stopIds: Set<number>;
  /** The token that closes a turn (<end_of_turn>, <turn|>), or null when there is none. */
  readonly turnEndId: number | null;
  private template: Template | null;
  /** Why the chat template could not be used (it does not parse), reported when a chat is rendered. */
  private templateError: string | null = null;
  private bosToken: string;

  private constructor(private hf: HfTokenizer, config: Record<string, unknown>, templateSource: string | null, extraStops: number[], readonly dir: string, templateWhere: string) {
    this.bosToken = tokenText(config.bos_token) ?? '<bos>';
    const bos = hf.token_to_id(this.bosToken);
    if (bos === undefined) throw new LutraError(`${dir}: tokenizer has no ${this.bosToken} token`);
    this.bosId = bos;
    // A template that does not parse fails chats only: raw prompts need no template.
    this.template = null;
    if (templateSource) {
      try {
        this.template = new Template(templateSource);
      } catch (e) {
        this.templateError = `${templateWhere}: the chat template does not parse (${(e as Error).message.split('\n')[0]}); fix it, or give the model raw prompts (no chat template)`;
      }
    }
    this.stopIds = new Set(extraStops);
    const eosToken = tokenText(config.eos_token);
    for (const t of eosToken !== undefined ? [eosToken, '<eos>'] : ['<eos>']) {
      const id = hf.token_to_id(t);
      if (id !== undefined) this.stopIds.add(id);
    }
    this.turnEndId = this.templateTurnEnd() ?? this.fallbackTurnEnd();
    if (this.turnEndId !== null) this.stopIds.add(this.turnEndId);
  }

  /**
   * The special token the chat template writes right after a user message's text (and any
   * whitespace), or null (no template, it fails on a plain user message, or what follows the text
   * is not a special token).
   */
  private templateTurnEnd(): number | null {
    if (!this.template) return null;
    let text: string;
    try {
      text = this.template.render({ messages: [{ role: 'user', content: PROBE_TEXT }], bos_token: this.bosToken, add_generation_prompt: false });
    } catch {
      return null;
    }
    const at = text.lastIndexOf(PROBE_TEXT);
    if (at < 0) return null;
    // Whitespace a template puts before the closing token (e.g. "\n<|im_end|>") is skipped.
    const first = this.hf.encode(text.slice(at + PROBE_TEXT.length).trimStart(), { add_special_tokens: false }).ids[0];
    if (first === undefined || first === this.bosId) return null;
    // A special token decodes to nothing when special tokens are skipped.
    return this.hf.decode([first], { skip_special_tokens: true }) === '' ? first : null;
  }

  private fallbackTurnEnd(): number | null {
    for (const t of TURN_END_FALLBACK) {
      const id = this.hf.token_to_id(t);
      if (id !== undefined) return id;
    }
    return null;
  }

  /** Load tokenizer.json, tokenizer_config.json and chat_template.jinja (preferred) from a model folder. */
  static load(dir: string, extraStops: number[] = []): GemmaTokenizer {
    const tokPath = join(dir, 'tokenizer.json');
    if (!existsSync(tokPath)) throw new LutraError(`${tokPath}: missing; the model needs the tokenizer.json it was trained with (a package converted from a GGUF without tokenizer metadata gets one with lutra convert --tokenizer DIR)`);
    const tokJson = readJsonFile(tokPath, 'the tokenizer');
    const cfgPath = join(dir, 'tokenizer_config.json');
    const cfg = existsSync(cfgPath) ? readJsonFile(cfgPath, 'the tokenizer config') : {};
    const jinjaPath = join(dir, 'chat_template.jinja');
    const templateSource = existsSync(jinjaPath)
      ? readFileSync(jinjaPath, 'utf8')
      : typeof cfg.chat_template === 'string'
        ? cfg.chat_template
        : null;
    const templateWhere = existsSync(jinjaPath) ? jinjaPath : `${cfgPath} (chat_template)`;
    return GemmaTokenizer.fromJson(tokJson, cfg, templateSource, extraStops, dir, tokPath, templateWhere);
  }

  /**
   * A tokenizer from an in-memory tokenizer.json and tokenizer config (e.g. rebuilt from a GGUF's
   * metadata). `dir` names the model in errors; `what` names the tokenizer's source.
   */
  static fromJson(tokJson: Record<string, unknown>, cfg: Record<string, unknown>, templateSource: string | null, extraStops: number[], dir: string, what = dir, templateWhere = what): GemmaTokenizer {
    let hf: HfTokenizer;
    try {
      hf = new HfTokenizer(tokJson, cfg);
    } catch (e) {
      throw new LutraError(`${what}: not a usable tokenizer (${(e as Error).message})`);
    }
    return new GemmaTokenizer(hf, cfg, templateSource, extraStops, dir, templateWhere);
  }

  get hasChatTemplate(): boolean {
    return this.template !== null || this.templateError !== null;
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

  /** Render the chat template (Gemma 3's folds a system message into the first user turn; Gemma 4's gives it a turn). */
  renderChat(messages: ChatMessage[], addGenerationPrompt = true): string {
    if (this.templateError !== null) throw new LutraError(this.templateError);
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
