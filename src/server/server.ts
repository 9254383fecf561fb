// An OpenAI-compatible HTTP server over one loaded model (node:http, no framework):
//   POST /v1/chat/completions, POST /v1/completions (streaming as Server-Sent Events or not),
//   GET /v1/models, GET /health, and the chat page at / with the files it loads (browser.ts).
// Requests run in the model's session pool: up to `parallel` generate at once (taking turns
// token by token), more wait in a bounded queue, beyond it 429. A client that goes away cancels
// its generation within one token. close() stops accepting, lets running requests finish for a
// grace period, then ends the rest with an error event.
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import type { LutraModel } from '../api/model.js';
import type { GenerateOptions, GenerationChunk, GenerationResult } from '../runtime/generate.js';
import { LutraError } from '../util/errors.js';
import { browserModelName, serveBrowser, type BrowserOptions } from './browser.js';
import { ApiError, finishReason, parseChatRequest, parseCompletionRequest, timings, usage, type ParsedRequest } from './openai.js';

export interface ServerOptions {
  model: LutraModel;
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 8080; 0 picks a free port. */
  port?: number;
  /** The id /v1/models lists and requests may name (default: the model folder's name). */
  modelName?: string;
  /** Largest request body accepted (default 1 MiB); larger ones get 413. */
  maxBodyBytes?: number;
  /** Called once per finished request (for logs). */
  onRequest?: (line: string) => void;
  /** Speculative decoding of requests that do not set the `speculative` field (default off). */
  speculative?: 'off' | 'lookup' | 'suffix' | 'draft';
  /** The draft model requests with speculative "draft" use (sharing the model's tokenizer). */
  draft?: LutraModel;
  /**
   * The chat page at / and the browser build, with the model's files for it to load (default on:
   * the served model; isolation on). false serves the API only.
   */
  browser?: Partial<BrowserOptions> | false;
}

export interface LutraServer {
  readonly url: string;
  readonly port: number;
  /** Requests generating now. */
  readonly active: number;
  /** Requests waiting for a session. */
  readonly waiting: number;
  /** Stop accepting; running requests get up to graceMs to finish, then are ended. */
  close(graceMs?: number): Promise<void>;
}

export const DEFAULT_MAX_BODY = 1 << 20;

export async function createServer(opts: ServerOptions): Promise<LutraServer> {
  const { model } = opts;
  const modelName = opts.modelName ?? (model.info.path.replace(/[/\\]+$/, '').split(/[/\\]/).pop() || 'lutra');
  const maxBody = opts.maxBodyBytes ?? DEFAULT_MAX_BODY;
  const created = Math.floor(Date.now() / 1000);
  /** Abort controllers of running requests, ended on close. */
  const running = new Set<AbortController>();
  let closing = false;
  const browser: BrowserOptions | null =
    opts.browser === false ? null : { models: [{ name: browserModelName(model.info.path), path: model.info.path }], ...opts.browser };

  const server: Server = createHttpServer((req, res) => {
    handle(req, res).catch((e) => {
      // Only a fault of lutra's own gets here: answer 500 if the answer has not started.
      const err = e instanceof ApiError ? e : new ApiError(500, `internal error: ${(e as Error)?.message ?? e}`);
      if (!res.headersSent) sendJson(res, err.status, err.body());
      else res.end();
    });
  });
  server.keepAliveTimeout = 5000;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const t0 = performance.now();
    const pathname = (req.url ?? '/').split('?')[0];
    const path = pathname.replace(/\/+$/, '') || '/';
    try {
      if (closing) throw new ApiError(503, 'the server is shutting down', null, 'server_shutdown');
      if (browser && !pathname.startsWith('/v1/') && pathname !== '/health' && serveBrowser(req, res, pathname, browser)) return;
      if (path === '/health' || path === '/v1/health') {
        if (req.method !== 'GET') throw methodNotAllowed('GET');
        const b = model.batcher?.stats;
        // Decode steps of concurrent requests share a forward pass: tokens per weight pass.
        const decode = b
          ? { batched: true, passes: b.passes, tokens: b.tokens, tokens_per_pass: Number(b.tokensPerPass.toFixed(3)), max_tokens_per_pass: b.maxTokensPerPass }
          : { batched: false };
        return sendJson(res, 200, { status: 'ok', model: modelName, active: model.pool.active, waiting: model.pool.waiting, sessions: model.pool.sessions, decode });
      }
      if (path === '/v1/models') {
        if (req.method !== 'GET') throw methodNotAllowed('GET');
        return sendJson(res, 200, { object: 'list', data: [modelObject(), ...model.adapters.names().map((a) => modelObject(a))] });
      }
      if (path.startsWith('/v1/models/')) {
        const id = decodeURIComponent(path.slice('/v1/models/'.length));
        if (id !== modelName && !model.adapters.names().includes(id)) throw new ApiError(404, `The model '${id}' does not exist`, 'model', 'model_not_found');
        return sendJson(res, 200, modelObject(id === modelName ? undefined : id));
      }
      if (path === '/v1/chat/completions' || path === '/v1/completions') {
        if (req.method !== 'POST') throw methodNotAllowed('POST');
        const body = await readJson(req, maxBody);
        const chat = path === '/v1/chat/completions';
        const parsed = chat ? parseChatRequest(body) : parseCompletionRequest(body);
        const adapters = model.adapters.names();
        if (parsed.model !== undefined && parsed.model !== modelName && !adapters.includes(parsed.model)) {
          const also = adapters.length ? ` and its adapters ${adapters.map((a) => `'${a}'`).join(', ')}` : '';
          throw new ApiError(404, `The model '${parsed.model}' does not exist; this server serves '${modelName}'${also}`, 'model', 'model_not_found');
        }
        // A model id naming an adapter selects it; the `adapter` field (a lutra extension) may too, but not a different one.
        const byModel = parsed.model !== undefined && parsed.model !== modelName ? parsed.model : undefined;
        if (byModel !== undefined && parsed.adapter !== undefined && parsed.adapter !== byModel) {
          throw new ApiError(400, `adapter: ${JSON.stringify(parsed.adapter)} contradicts model '${byModel}' (an adapter); give one of them`, 'adapter');
        }
        if (byModel !== undefined) parsed.adapter = byModel;
        if (typeof parsed.adapter === 'string' && !adapters.includes(parsed.adapter)) {
          throw new ApiError(400, `adapter: no adapter named ${JSON.stringify(parsed.adapter)}; ${adapters.length ? `this server has ${adapters.join(', ')}` : 'this server has none (serve --adapter NAME=DIR)'}`, 'adapter');
        }
        let hungUp = false;
        res.once('close', () => (hungUp = !res.writableEnded));
        await complete(req, res, parsed, chat);
        // A client that hung up stopped its generation; the log says so beside the status sent ('-': none was).
        const status = res.headersSent ? String(res.statusCode) : '-';
        const gone = hungUp ? ' (client closed the connection)' : '';
        opts.onRequest?.(`${req.method} ${path} ${status}${gone} ${(performance.now() - t0).toFixed(0)} ms`);
        return;
      }
      throw new ApiError(404, `no route ${req.method} ${pathname}; this server has POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health${browser ? ', and the chat page at GET /' : ''}`, null, 'not_found');
    } catch (e) {
      const err = toApiError(e);
      if (!res.headersSent) sendJson(res, err.status, err.body(), err.headers);
      else if (!res.writableEnded && String(res.getHeader('content-type')).startsWith('text/event-stream')) {
        // A stream already under way (e.g. an fp16 overflow stopped the model): say so in the stream.
        sse(res, err.body());
        res.end('data: [DONE]\n\n');
      } else res.end();
      opts.onRequest?.(`${req.method} ${path} ${err.status} ${err.message}`);
    }
  }

  function speculativeOption(v: ParsedRequest['speculative']): GenerateOptions['speculative'] {
    if (v !== 'draft') return v;
    if (!opts.draft) throw new ApiError(400, 'speculative: "draft" needs a server started with --speculative draft:MODEL', 'speculative');
    return { draft: opts.draft };
  }

  /** The served model, or one of its adapters (listed as a model of its own, as OpenAI lists fine-tunes). */
  function modelObject(adapter?: string) {
    const o = { id: adapter ?? modelName, object: 'model', created, owned_by: 'lutra', context_length: model.info.contextLength };
    return adapter === undefined ? o : { ...o, parent: modelName, adapter };
  }

  async function complete(req: IncomingMessage, res: ServerResponse, p: ParsedRequest, chat: boolean): Promise<void> {
    const ids = p.messages ? model.chatIds(p.messages) : model.promptIds(p.prompt!);
    const ctx = model.info.contextLength;
    if (ids.length >= ctx) {
      throw new ApiError(400, `the prompt is ${ids.length} tokens; this model's context holds ${ctx} (with room for at least one generated token)`, p.messages ? 'messages' : 'prompt', 'context_length_exceeded');
    }
    const abort = new AbortController();
    running.add(abort);
    // The client going away (socket closed before the answer ended) cancels the generation.
    const onClose = () => {
      if (!res.writableFinished) abort.abort();
    };
    res.on('close', onClose);
    const id = `${chat ? 'chatcmpl' : 'cmpl'}-${randomBytes(12).toString('hex')}`;
    const object = chat ? 'chat.completion' : 'text_completion';
    const served = typeof p.adapter === 'string' ? p.adapter : modelName;
    const base = () => ({ id, object: p.stream ? `${object}${chat ? '.chunk' : ''}` : object, created: Math.floor(Date.now() / 1000), model: served });
    try {
      const gen = model.run(ids, { ...p.options, speculative: speculativeOption(p.speculative ?? opts.speculative), signal: abort.signal, adapter: p.adapter });
      if (!p.stream) {
        let r: IteratorResult<GenerationChunk, GenerationResult>;
        do r = await gen.next();
        while (!r.done);
        const result = r.value;
        if (result.finishReason === 'abort') return endAborted(res, abort);
        const choice = chat
          ? { index: 0, message: { role: 'assistant', content: result.text }, logprobs: null, finish_reason: finishReason(result.finishReason) }
          : { index: 0, text: result.text, logprobs: null, finish_reason: finishReason(result.finishReason) };
        return sendJson(res, 200, { ...base(), choices: [choice], usage: usage(result), timings: timings(result) });
      }
      // Streaming: the first chunk waits for a session (a 429 can still be a plain error).
      let r = await gen.next();
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
      if (chat) sse(res, { ...base(), choices: [{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }] });
      while (!r.done) {
        const c = r.value;
        if (c.finishReason === 'abort') {
          if (!abort.signal.aborted) break;
        } else if (c.text !== '' || c.finishReason !== null) {
          const delta = c.text !== '' ? (chat ? { content: c.text } : c.text) : chat ? {} : '';
          const fr = c.finishReason === null ? null : finishReason(c.finishReason);
          sse(res, { ...base(), choices: [chat ? { index: 0, delta, logprobs: null, finish_reason: fr } : { index: 0, text: delta, logprobs: null, finish_reason: fr }] });
        }
        r = await gen.next();
      }
      const result = r.done ? r.value : null;
      if (result === null || result.finishReason === 'abort') return endAborted(res, abort);
      if (p.includeUsage) sse(res, { ...base(), choices: [], usage: usage(result), timings: timings(result) });
      res.end('data: [DONE]\n\n');
    } finally {
      running.delete(abort);
      res.off('close', onClose);
    }
  }

  /** A generation ended by its signal: the client left (nothing to say) or the server is closing. */
  function endAborted(res: ServerResponse, abort: AbortController): void {
    const reason = abort.signal.reason;
    if (res.destroyed || res.writableEnded) return;
    const err = reason instanceof ApiError ? reason : new ApiError(503, 'the generation was cancelled', null, 'cancelled');
    if (!res.headersSent) return sendJson(res, err.status, err.body());
    sse(res, err.body());
    res.end('data: [DONE]\n\n');
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(new LutraError(e.code === 'EADDRINUSE' ? `port ${opts.port ?? 8080}: already in use (choose another with --port)` : `cannot listen on ${opts.host ?? '127.0.0.1'}:${opts.port ?? 8080}: ${e.message}`)),
    );
    server.listen(opts.port ?? 8080, opts.host ?? '127.0.0.1', () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;

  return {
    url: `http://${host}:${addr.port}`,
    port: addr.port,
    get active() {
      return model.pool.active;
    },
    get waiting() {
      return model.pool.waiting;
    },
    async close(graceMs = 5000): Promise<void> {
      closing = true;
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const deadline = Date.now() + graceMs;
      while (running.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      for (const a of running) a.abort(new ApiError(503, 'the server is shutting down', null, 'server_shutdown'));
      while (running.size > 0) await new Promise((r) => setTimeout(r, 5));
      server.closeAllConnections();
      await stopped;
    },
  };
}

function methodNotAllowed(allowed: string): ApiError {
  return new ApiError(405, `method not allowed; use ${allowed}`, null, 'method_not_allowed', undefined, { allow: allowed });
}

function toApiError(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  if (e instanceof LutraError) {
    switch (e.code) {
      case 'context_length_exceeded':
        return new ApiError(400, e.message, null, 'context_length_exceeded');
      case 'queue_full':
        return new ApiError(429, e.message, null, 'rate_limit_exceeded');
      case 'disposed':
        return new ApiError(503, e.message, null, 'server_shutdown');
      default: {
        // Option errors name lutra's option; say which request field that is.
        const field = /^(temperature|topK|topP|minP|repetitionPenalty|seed|maxTokens|stop|prompt)\b/.exec(e.message)?.[1];
        return new ApiError(400, e.message, field ? FIELD[field] : null);
      }
    }
  }
  return new ApiError(500, `internal error: ${(e as Error)?.message ?? e}`);
}

const FIELD: Record<string, string> = {
  temperature: 'temperature',
  topK: 'top_k',
  topP: 'top_p',
  minP: 'min_p',
  repetitionPenalty: 'repetition_penalty',
  seed: 'seed',
  maxTokens: 'max_tokens',
  prompt: 'prompt', // a completion's prompt (token ids outside the vocabulary, say)
  stop: 'stop',
};

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function sse(res: ServerResponse, body: unknown): void {
  res.write(`data: ${JSON.stringify(body)}\n\n`);
}

/** The request body as JSON: 413 past the limit, 400 when it does not parse. */
function readJson(req: IncomingMessage, limit: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > limit) {
      req.resume();
      return reject(new ApiError(413, `the request body is ${declared} bytes; the limit is ${limit}`, null, 'request_too_large'));
    }
    const parts: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (b: Buffer) => {
      if (failed) return;
      size += b.length;
      if (size > limit) {
        failed = true;
        reject(new ApiError(413, `the request body is over the limit of ${limit} bytes`, null, 'request_too_large'));
        return;
      }
      parts.push(b);
    });
    req.on('end', () => {
      if (failed) return;
      const text = Buffer.concat(parts).toString('utf8');
      try {
        resolve(JSON.parse(text));
      } catch (e) {
        reject(new ApiError(400, `the request body is not valid JSON (${(e as Error).message})`, null, 'invalid_json'));
      }
    });
    req.on('error', (e) => {
      if (!failed) reject(new ApiError(400, `reading the request failed: ${e.message}`));
    });
  });
}
