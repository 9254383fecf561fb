// A conversation over a loaded model that keeps its KV cache between turns (model.createChatSession()).
import type { LutraModel } from './model.js';
import type { PreparedLora } from '../adapters/apply.js';
import { Session } from '../runtime/session.js';
import { generate, type GenerateOptions, type GenerationChunk, type GenerationResult } from '../runtime/generate.js';
import { checkOptionKeys, GENERATE_KEYS } from '../util/options.js';
import { LutraError } from '../util/errors.js';
import type { ChatMessage } from '../tokenizer/tokenizer.js';

/**
 * Tokens a session can step back to reuse a cached prefix: a conversation's re-rendered history
 * may end a few tokens differently from what was generated (the template trims the answer).
 * Extra ring slots on sliding layers.
 */
export const SESSION_SLACK = 64;

export interface ChatSessionOptions {
  /** System instructions, kept as the first message. */
  system?: string;
  /** Tokens this conversation may hold (default the model's context length). */
  contextLength?: number;
  /** The adapter the conversation runs with (see AdapterOption; fixed for its life). */
  adapter?: string | null;
}

/**
 * A conversation with its own KV cache, kept between turns: a follow-up prefills only the new
 * tokens. When the history outgrows the context, the oldest exchanges are dropped.
 */
export class ChatSession {
  readonly messages: ChatMessage[] = [];
  private readonly session: Session;
  private busy = false;

  /** @internal use model.createChatSession(). */
  constructor(private readonly model: LutraModel, opts: ChatSessionOptions) {
    const contextLength = opts.contextLength ?? model.info.contextLength;
    if (!Number.isInteger(contextLength) || contextLength < 2 || contextLength > model.info.maxPositions) {
      throw new LutraError(`contextLength ${contextLength}: expected an integer in [2, ${model.info.maxPositions}]`);
    }
    // Slack lets the cache step back over an answer whose re-rendered tokens differ (the template trims).
    const { prefillBatch, onOverflow, batcher, kvType } = model.pool.opts;
    const lora: PreparedLora | null = model.adapters.resolve(opts.adapter);
    this.session = new Session(model.engine, { contextLength, rollbackSlack: SESSION_SLACK, prefillBatch, onOverflow, batcher, lora, kvType });
    if (opts.system !== undefined) {
      if (typeof opts.system !== 'string') throw new LutraError('system: expected a string');
      this.messages.push({ role: 'system', content: opts.system });
    }
  }

  /** Tokens in this conversation's KV cache. */
  get cachedTokens(): number {
    return this.session.position;
  }

  /** Send a user message and stream the answer; the answer joins the history when the stream ends. */
  async *stream(content: string, opts: GenerateOptions = {}): AsyncGenerator<GenerationChunk, GenerationResult> {
    if (typeof content !== 'string') throw new LutraError('content: expected a string');
    checkOptionKeys(opts, GENERATE_KEYS, 'chat session send options');
    if (this.busy) throw new LutraError('this chat session is already answering; wait for the answer (or abort it) first');
    this.busy = true;
    try {
      this.messages.push({ role: 'user', content });
      const maxTokens = opts.maxTokens ?? 256;
      const ids = this.fit(maxTokens);
      const room = this.session.contextLength - ids.length;
      const result = yield* generate(this.session, this.model.tokenizer, ids, { ...opts, maxTokens: Math.min(maxTokens, room) });
      this.messages.push({ role: 'assistant', content: result.text });
      return result;
    } catch (e) {
      if (this.messages[this.messages.length - 1]?.role === 'user') this.messages.pop();
      throw e;
    } finally {
      this.busy = false;
    }
  }

  /** Send a user message; resolves with the answer. */
  async send(content: string, opts: GenerateOptions = {}): Promise<GenerationResult> {
    return drain(this.stream(content, opts));
  }

  /** Forget the conversation (the system message stays). */
  reset(): void {
    this.messages.splice(this.messages[0]?.role === 'system' ? 1 : 0);
    this.session.reset();
  }

  dispose(): void {
    this.session.dispose();
    this.model.forget(this);
  }

  /** Render the history, dropping the oldest user/assistant pairs until it fits with room for an answer. */
  private fit(maxTokens: number): number[] {
    const first = this.messages[0]?.role === 'system' ? 1 : 0;
    for (;;) {
      const ids = this.model.chatIds(this.messages);
      const turns = this.messages.length - first;
      if (ids.length + Math.min(maxTokens, 16) <= this.session.contextLength || turns <= 1) {
        if (ids.length >= this.session.contextLength) {
          throw new LutraError(`the message is ${ids.length} tokens; the context holds ${this.session.contextLength}`, 'context_length_exceeded');
        }
        return ids;
      }
      this.messages.splice(first, 2);
    }
  }
}

/** Run a generation to its end; its result. */
export async function drain(g: AsyncGenerator<GenerationChunk, GenerationResult>): Promise<GenerationResult> {
  for (;;) {
    const r = await g.next();
    if (r.done) return r.value;
  }
}
