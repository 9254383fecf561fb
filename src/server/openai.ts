// The OpenAI API's request and response shapes: request bodies checked field by field into
// lutra's generation options (errors name the field, as OpenAI's `param`), and the completion,
// chunk and usage objects built from lutra's results.
import type { ChatMessage } from '../api/model.js';
import type { GenerateOptions, GenerationResult, FinishReason } from '../runtime/generate.js';

/** An error answered as OpenAI does: status, and {"error": {message, type, param, code}}. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly type = status === 429 ? 'rate_limit_error' : status >= 500 ? 'server_error' : 'invalid_request_error',
    /** Headers the answer carries (Allow on a 405, Retry-After on a 429). */
    readonly headers: Record<string, string> = status === 429 ? { 'retry-after': '1' } : {},
  ) {
    super(message);
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export interface ParsedRequest {
  /** Chat messages, or a completion prompt (text or token ids). */
  messages?: ChatMessage[];
  prompt?: string | number[];
  model?: string;
  stream: boolean;
  includeUsage: boolean;
  options: GenerateOptions;
  /** lutra extension: speculative decoding for this request (undefined: the server's default). */
  speculative?: 'off' | 'lookup' | 'suffix' | 'draft';
  /** lutra extension: the LoRA adapter to run with (a name the server loaded; null: the base model). */
  adapter?: string | null;
}

type Body = Record<string, unknown>;

const bad = (param: string, message: string, code: string | null = null) => new ApiError(400, `${param}: ${message}`, param, code);

function number(body: Body, key: string, min: number, max: number, integer = false): number | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || (integer && !Number.isInteger(v))) throw bad(key, `expected ${integer ? 'an integer' : 'a number'}, got ${JSON.stringify(v)}`);
  if (v < min || v > max) throw bad(key, `${v} is out of range: expected ${min} to ${max}`);
  return v;
}

/**
 * Fields lutra refuses unless they are at their neutral value (OpenAI answers 400 for what it
 * cannot do); everything else unknown (user, metadata, store, service_tier, ...) is ignored.
 */
function refuseUnsupported(body: Body): void {
  if (body.n !== undefined && body.n !== null && body.n !== 1) throw bad('n', 'only n = 1 is supported (one choice per request)');
  for (const k of ['frequency_penalty', 'presence_penalty']) {
    if (body[k] !== undefined && body[k] !== null && body[k] !== 0) throw bad(k, 'not supported (use repetition_penalty, a lutra extension)');
  }
  if (Array.isArray(body.tools) ? body.tools.length > 0 : body.tools !== undefined && body.tools !== null) throw bad('tools', 'tool calls are not supported');
  if (body.functions !== undefined && body.functions !== null) throw bad('functions', 'function calls are not supported');
  if (body.logprobs !== undefined && body.logprobs !== null && body.logprobs !== false && body.logprobs !== 0) throw bad('logprobs', 'not supported');
  if (body.logit_bias !== undefined && body.logit_bias !== null && Object.keys(body.logit_bias as object).length > 0) throw bad('logit_bias', 'not supported');
  const rf = body.response_format as Body | undefined;
  if (rf && typeof rf === 'object' && rf.type !== undefined && rf.type !== 'text') throw bad('response_format', 'only {"type": "text"} is supported');
  if (body.echo === true) throw bad('echo', 'not supported');
  if (body.suffix !== undefined && body.suffix !== null && body.suffix !== '') throw bad('suffix', 'not supported');
  if (body.best_of !== undefined && body.best_of !== null && body.best_of !== 1) throw bad('best_of', 'only best_of = 1 is supported');
}

/** Generation options shared by both endpoints. */
function options(body: Body): GenerateOptions {
  const opts: GenerateOptions = {};
  const maxTokens = number(body, 'max_completion_tokens', 1, 1 << 30, true) ?? number(body, 'max_tokens', 1, 1 << 30, true);
  if (maxTokens !== undefined) opts.maxTokens = maxTokens;
  const temperature = number(body, 'temperature', 0, 2);
  if (temperature !== undefined) opts.temperature = temperature;
  const topP = number(body, 'top_p', 0, 1);
  if (topP !== undefined) opts.topP = topP === 0 ? Number.MIN_VALUE : topP;
  const topK = number(body, 'top_k', 0, 1 << 20, true);
  if (topK !== undefined) opts.topK = topK;
  const minP = number(body, 'min_p', 0, 0.999999);
  if (minP !== undefined) opts.minP = minP;
  const rep = number(body, 'repetition_penalty', Number.MIN_VALUE, 100);
  if (rep !== undefined) opts.repetitionPenalty = rep;
  const seed = body.seed;
  if (seed !== undefined && seed !== null) {
    if (typeof seed !== 'number' || !Number.isInteger(seed)) throw bad('seed', `expected an integer, got ${JSON.stringify(seed)}`);
    opts.seed = ((seed % 2 ** 32) + 2 ** 32) % 2 ** 32; // any integer, as OpenAI takes; the sampler's seed is 32-bit
  }
  const stop = body.stop;
  if (stop !== undefined && stop !== null) {
    const list = typeof stop === 'string' ? [stop] : stop;
    if (!Array.isArray(list) || list.some((s) => typeof s !== 'string')) throw bad('stop', 'expected a string or an array of strings');
    if (list.length > 4) throw bad('stop', 'at most 4 stop sequences');
    opts.stop = list as string[];
  }
  return opts;
}

function streamFlags(body: Body): { stream: boolean; includeUsage: boolean } {
  if (body.stream !== undefined && body.stream !== null && typeof body.stream !== 'boolean') throw bad('stream', 'expected a boolean');
  const stream = body.stream === true;
  const so = body.stream_options as Body | undefined | null;
  if (so !== undefined && so !== null) {
    if (typeof so !== 'object' || Array.isArray(so)) throw bad('stream_options', 'expected an object');
    if (!stream) throw bad('stream_options', 'only allowed when stream is true');
    if (so.include_usage !== undefined && typeof so.include_usage !== 'boolean') throw bad('stream_options.include_usage', 'expected a boolean');
  }
  return { stream, includeUsage: so?.include_usage === true };
}

function adapterField(body: Body): string | null | undefined {
  const v = body.adapter;
  if (v === undefined || v === null) return v as undefined | null;
  if (typeof v !== 'string' || v === '') throw bad('adapter', `expected the name of a loaded adapter or null, got ${JSON.stringify(v)}`);
  return v;
}

function modelField(body: Body): string | undefined {
  if (body.model === undefined || body.model === null) return undefined;
  if (typeof body.model !== 'string') throw bad('model', 'expected a string');
  return body.model;
}

/** Content of a message: a string, or OpenAI's array of text parts. */
function content(v: unknown, i: number): string {
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) {
    return v
      .map((part, j) => {
        const p = part as Body;
        if (p?.type !== 'text' || typeof p.text !== 'string') throw bad(`messages[${i}].content[${j}]`, 'only text parts are supported');
        return p.text;
      })
      .join('');
  }
  throw bad(`messages[${i}].content`, 'expected a string or an array of text parts');
}

export function parseChatRequest(body: unknown): ParsedRequest {
  const b = object(body);
  refuseUnsupported(b);
  if (b.messages === undefined) throw bad('messages', 'required', 'missing_required_parameter');
  if (!Array.isArray(b.messages) || b.messages.length === 0) throw bad('messages', 'expected a non-empty array');
  const messages: ChatMessage[] = b.messages.map((m, i) => {
    if (typeof m !== 'object' || m === null) throw bad(`messages[${i}]`, 'expected an object with role and content');
    const msg = m as Body;
    const role = msg.role === 'developer' ? 'system' : msg.role;
    if (role !== 'system' && role !== 'user' && role !== 'assistant') {
      throw bad(`messages[${i}].role`, `expected "system", "developer", "user" or "assistant", got ${JSON.stringify(msg.role)}`);
    }
    return { role, content: content(msg.content, i) };
  });
  return { messages, model: modelField(b), ...streamFlags(b), options: options(b), speculative: speculativeField(b), adapter: adapterField(b) };
}

export function parseCompletionRequest(body: unknown): ParsedRequest {
  const b = object(body);
  refuseUnsupported(b);
  let prompt: string | number[];
  const p = b.prompt;
  if (p === undefined) throw bad('prompt', 'required', 'missing_required_parameter');
  if (typeof p === 'string') prompt = p;
  else if (Array.isArray(p) && p.length === 1 && typeof p[0] === 'string') prompt = p[0];
  else if (Array.isArray(p) && p.length > 0 && p.every((x) => Number.isInteger(x))) prompt = p as number[];
  else if (Array.isArray(p) && p.length === 1 && Array.isArray(p[0]) && p[0].every((x: unknown) => Number.isInteger(x))) prompt = p[0] as number[];
  else throw bad('prompt', 'expected a string or an array of token ids (one prompt per request)');
  return { prompt, model: modelField(b), ...streamFlags(b), options: options(b), speculative: speculativeField(b), adapter: adapterField(b) };
}

/** The `speculative` extension field: "off", "lookup", "suffix" or "draft" (the server's draft model). */
function speculativeField(body: Body): ParsedRequest['speculative'] {
  const v = body.speculative;
  if (v === undefined || v === null) return undefined;
  if (v === false) return 'off';
  if (v !== 'off' && v !== 'lookup' && v !== 'suffix' && v !== 'draft') throw bad('speculative', `expected "off", "lookup", "suffix" or "draft", got ${JSON.stringify(v)}`);
  return v;
}

function object(body: unknown): Body {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new ApiError(400, 'the request body must be a JSON object');
  return body as Body;
}

/** OpenAI's finish reasons: an aborted generation is never answered, so stop/length only. */
export function finishReason(r: FinishReason): 'stop' | 'length' {
  return r === 'length' ? 'length' : 'stop';
}

export function usage(r: GenerationResult) {
  return {
    prompt_tokens: r.usage.promptTokens,
    completion_tokens: r.usage.completionTokens,
    total_tokens: r.usage.promptTokens + r.usage.completionTokens,
    prompt_tokens_details: { cached_tokens: r.usage.cachedTokens },
    // lutra extension: what speculative decoding drafted and kept.
    ...(r.speculative
      ? {
          speculative: {
            source: r.speculative.source,
            drafted: r.speculative.drafted,
            accepted: r.speculative.accepted,
            acceptance_rate: round(r.speculative.acceptanceRate),
            tokens_per_pass: round(r.speculative.tokensPerPass),
            passes: r.speculative.passes,
          },
        }
      : {}),
  };
}

/** llama.cpp server's `timings` extension: what was computed and how fast. */
export function timings(r: GenerationResult) {
  const t = r.timings;
  return {
    cache_n: r.usage.cachedTokens,
    prompt_n: t.promptEvaluated,
    prompt_ms: round(t.prefillMs),
    prompt_per_second: t.prefillMs > 0 ? round((t.promptEvaluated * 1000) / t.prefillMs) : null,
    predicted_n: r.usage.completionTokens,
    predicted_ms: round(t.decodeMs),
    predicted_per_second: t.decodeMs > 0 ? round((t.decodeSteps * 1000) / t.decodeMs) : null,
  };
}

const round = (x: number) => Math.round(x * 1000) / 1000;
