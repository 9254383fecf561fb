// lutra as a library: load a model once, then complete, chat, stream, tokenize and score text
// over it. Requests run in sessions from a pool (weights held once, a KV cache per session);
// a conversation that continues an earlier request reuses that request's cached prefix.
import { loadModel as loadWeights, makeBackend } from '../runtime/load.js';
import type { CausalLM } from '../model/forward.js';
import type { ChatMessage, GemmaTokenizer } from '../tokenizer/tokenizer.js';
import { generate, type GenerateOptions, type GenerationChunk, type GenerationResult } from '../runtime/generate.js';
import { Session } from '../runtime/session.js';
import { KVCache } from '../runtime/kv-cache.js';
import { SessionPool, type Lease } from './pool.js';
import { DecodeBatcher } from '../runtime/batcher.js';
import { checkOptionKeys, checkSignal, GENERATE_KEYS } from '../util/options.js';
import { LutraError } from '../util/errors.js';
import { parseNumerics, numericsName } from '../fp16/numerics.js';
import type { SimdLevel } from '../backend/wasm/kernels.js';
import { kvTypes, type KvType } from '../backend/backend.js';
import { logSoftmax } from '../verify/metrics.js';
import { AdapterRegistry, loraSpecs, type LoraInput } from './adapters.js';
import { ChatSession, drain, SESSION_SLACK, type ChatSessionOptions } from './chat-session.js';

export type { ChatMessage, LoraInput, ChatSessionOptions };
export { ChatSession };


export interface LoadOptions {
  /** 'wasm' (SIMD kernels on worker threads, the default) or 'reference' (plain TypeScript, slow: the oracle). */
  backend?: 'wasm' | 'reference';
  /** Threads of the wasm backend (default: the machine's cores). */
  threads?: number;
  /** 'f32', or an fp16 accelerator emulation such as 'fp16' (default: what a package records, else f32). */
  numerics?: string;
  /** Inputs of int8/int4/LUT matmuls: 'q8' (default, as llama.cpp; LUT tables rounded to 7- or 8-bit integers per table) or 'f32'. */
  activations?: 'q8' | 'f32';
  /**
   * wasm backend, q8 activations: hold lut5..7 weights as int8 rows (a byte a weight) and lut1..3
   * as lut4 rows (4 bits), default true: about twice the decode speed of their packed kernels;
   * false keeps them packed.
   */
  repack?: boolean;
  /** wasm kernels build: 'auto' (default), 'relaxed' or 'baseline'. */
  simd?: SimdLevel;
  /** Polls a waiting wasm thread makes before it sleeps (default 2000, or $LUTRA_SPIN). */
  spin?: number;
  /** Tokens per session: prompt plus answer (default min(max_position_embeddings, 4096)). */
  contextLength?: number;
  /**
   * How sessions' KV caches store keys and values: 'f16' (default, as llama.cpp: half the memory,
   * and half the bytes each token reads at long context) or 'f32'.
   */
  kvCache?: KvType;
  /** Sessions that may generate at once (default 1; more wait their turn). */
  parallel?: number;
  /** Requests that may wait for a session before new ones are refused with code queue_full (default unlimited). */
  queueLimit?: number;
  /** Tokens per prefill batch (default 64). */
  prefillBatch?: number;
  /** Scan every weight for NaN/Inf at load (default true; about 20% of a load's CPU time). */
  checkWeights?: boolean;
  /** Called once the model's files are found and their headers checked, before the weights are read (for a loading line). */
  onOpened?: (backend: { name: string; threads: number }) => void;
  /**
   * Decode steps of concurrent sessions (parallel > 1, chat sessions) share one forward pass:
   * every weight is read once per step for all of them (default true).
   */
  batchDecode?: boolean;
  /** With fp16 numerics: 'error' (default) stops at the first overflow, naming layer, op and position; 'continue' runs on and notes it in the result. */
  onOverflow?: 'error' | 'continue';
  /**
   * LoRA adapters (PEFT folders) applied unmerged to every request that names none: a folder,
   * "FOLDER:WEIGHT" or {path, weight}; a list is blended (Σ weightᵢ·ΔWᵢ).
   */
  lora?: LoraInput | LoraInput[];
  /** Named adapters (or blends) a request chooses with `adapter: NAME`; the base weights are held once. */
  adapters?: Record<string, LoraInput | LoraInput[]>;
}

/** Every LoadOptions key (the compiler checks the list is complete). */
const LOAD_KEYS = Object.keys({
  backend: 1, threads: 1, numerics: 1, activations: 1, repack: 1, simd: 1, spin: 1, contextLength: 1, kvCache: 1, parallel: 1, queueLimit: 1,
  prefillBatch: 1, checkWeights: 1, onOpened: 1, batchDecode: 1, onOverflow: 1, lora: 1, adapters: 1,
} satisfies Record<keyof LoadOptions, 1>);

/** Which adapters a request runs with. */
export interface AdapterOption {
  /** A name from LoadOptions.adapters / addAdapter(); null runs the base model; omitted: LoadOptions.lora. */
  adapter?: string | null;
}

export interface ModelInfo {
  path: string;
  /** 'gemma3_text'. */
  architecture: string;
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  /** The model's max_position_embeddings. */
  maxPositions: number;
  /** Context of each session. */
  contextLength: number;
  /** How the KV cache stores keys and values. */
  kvCache: KvType;
  /** Bytes of one session's KV cache at that context. */
  kvCacheBytes: number;
  slidingWindow: number;
  backend: string;
  threads: number;
  numerics: string;
  hasChatTemplate: boolean;
  loadSeconds: number;
  /** What LoadOptions.lora applies to requests that name no adapter ("name:weight+…"), or null. */
  lora: string | null;
}

/** Options of a chat request. */
export interface ChatOptions extends GenerateOptions, AdapterOption {}

export interface CompletionOptions extends GenerateOptions, AdapterOption {
  /** Add <bos> before a text prompt (default true). */
  bos?: boolean;
}

export interface LogProbsOptions extends AdapterOption {
  /** Also return the k most likely tokens at every position (default 0). */
  topK?: number;
  /** Add <bos> before a text input (default true). */
  bos?: boolean;
}

export interface TokenLogProb {
  id: number;
  logProb: number;
}

export interface LogProbsResult {
  /** The scored ids (with <bos> for a text input). */
  tokenIds: number[];
  /** log p(tokenIds[i] | tokenIds[<i]) in nats, for i = 1..n−1 (the first token is given, not predicted). */
  logProbs: number[];
  /** With topK: the k most likely ids at each of those positions. */
  top?: TokenLogProb[][];
  /** −Σ logProbs: the sequence's negative log-likelihood in nats. */
  nll: number;
  /** exp(nll / (n−1)). */
  perplexity: number;
}

/** Load a model folder (Hugging Face checkpoint or lutra package) or a .gguf file. */
export async function loadModel(path: string, opts: LoadOptions = {}): Promise<LutraModel> {
  if (typeof path !== 'string' || path === '') throw new LutraError('loadModel: expected the path of a model folder or .gguf file');
  checkOptionKeys(opts, LOAD_KEYS, 'loadModel options');
  const backendName = opts.backend ?? 'wasm';
  if (backendName !== 'wasm' && backendName !== 'reference') throw new LutraError(`backend ${JSON.stringify(backendName)}: expected "wasm" or "reference"`);
  if (opts.threads !== undefined && (!Number.isInteger(opts.threads) || opts.threads < 1 || opts.threads > 256)) {
    throw new LutraError(`threads ${opts.threads}: expected an integer in [1, 256]`);
  }
  if (opts.onOverflow !== undefined && opts.onOverflow !== 'error' && opts.onOverflow !== 'continue') {
    throw new LutraError(`onOverflow ${JSON.stringify(opts.onOverflow)}: expected "error" or "continue"`);
  }
  if (opts.activations !== undefined && opts.activations !== 'q8' && opts.activations !== 'f32') {
    throw new LutraError(`activations ${JSON.stringify(opts.activations)}: expected "q8" or "f32"`);
  }
  if (opts.repack !== undefined && typeof opts.repack !== 'boolean') throw new LutraError(`repack ${JSON.stringify(opts.repack)}: expected true or false`);
  const numerics = opts.numerics === undefined ? undefined : parseNumerics(opts.numerics, 'numerics');
  if (opts.spin !== undefined && (!Number.isInteger(opts.spin) || opts.spin < 0)) throw new LutraError(`spin ${opts.spin}: expected a whole number of polls ≥ 0`);
  const backend = makeBackend(backendName, { threads: opts.threads, activations: opts.activations, simd: opts.simd, spin: opts.spin, repack: opts.repack });
  let loaded: ReturnType<typeof loadWeights>;
  try {
    await backend.ready?.();
    const threads = (backend as { threads?: number }).threads ?? 1;
    const lora = opts.lora === undefined ? undefined : loraSpecs(opts.lora, 'lora');
    if (opts.adapters !== undefined && (typeof opts.adapters !== 'object' || opts.adapters === null || Array.isArray(opts.adapters))) {
      throw new LutraError('adapters: expected an object of name → adapter folder(s)');
    }
    loaded = loadWeights(path, backend, { numerics, lora, checkWeights: opts.checkWeights, onOpened: opts.onOpened && (() => opts.onOpened!({ name: backend.name, threads })) });
  } catch (e) {
    backend.dispose?.();
    // Anything wrong with the files is the model's fault, whatever the loader's default code says.
    if (e instanceof LutraError && e.code === 'invalid_argument') throw new LutraError(e.message, 'invalid_model');
    throw e;
  }
  try {
    const registry = new AdapterRegistry(loaded.model.backend, loaded.tensors, loaded.lora);
    for (const [name, input] of Object.entries(opts.adapters ?? {})) registry.add(name, input);
    return new LutraModel(path, loaded.model, loaded.tokenizer!, loaded.loadSeconds, numericsName(loaded.numerics), opts, registry);
  } catch (e) {
    backend.dispose?.();
    throw e;
  }
}

export class LutraModel {
  readonly info: ModelInfo;
  /** The sessions behind complete(), chat() and their streams; a server reads its counters. */
  readonly pool: SessionPool;
  /** Runs concurrent sessions' decode steps as one forward pass (null with batchDecode: false); a server reads its counters. */
  readonly batcher: DecodeBatcher | null;
  private readonly sessions = new Set<ChatSession>();
  private disposed = false;

  /** @internal use loadModel(). */
  constructor(
    path: string,
    readonly engine: CausalLM,
    readonly tokenizer: GemmaTokenizer,
    loadSeconds: number,
    numerics: string,
    opts: LoadOptions,
    /** The LoRA adapters requests can choose (see addAdapter). */
    readonly adapters: AdapterRegistry,
  ) {
    const cfg = engine.cfg;
    const contextLength = opts.contextLength ?? Math.min(cfg.maxPositions, 4096);
    if (!Number.isInteger(contextLength) || contextLength < 2 || contextLength > cfg.maxPositions) {
      throw new LutraError(`contextLength ${contextLength}: expected an integer in [2, ${cfg.maxPositions}] (the model's max_position_embeddings)`);
    }
    const kvCache = opts.kvCache ?? 'f16';
    if (!kvTypes.includes(kvCache)) throw new LutraError(`kvCache ${JSON.stringify(opts.kvCache)}: expected one of ${kvTypes.join(', ')}`);
    if (opts.batchDecode !== undefined && typeof opts.batchDecode !== 'boolean') throw new LutraError(`batchDecode ${JSON.stringify(opts.batchDecode)}: expected true or false`);
    this.batcher = opts.batchDecode === false ? null : new DecodeBatcher();
    this.pool = new SessionPool(engine, {
      parallel: opts.parallel ?? 1,
      queueLimit: opts.queueLimit ?? Infinity,
      contextLength,
      prefillBatch: opts.prefillBatch,
      rollbackSlack: SESSION_SLACK,
      onOverflow: opts.onOverflow,
      batcher: this.batcher ?? undefined,
      kvType: kvCache,
    });
    const backend = engine.backend as { name: string; threads?: number };
    this.info = {
      path,
      architecture: cfg.modelType,
      vocabSize: engine.vocabSize,
      hiddenSize: cfg.hiddenSize,
      numLayers: cfg.numLayers,
      maxPositions: cfg.maxPositions,
      contextLength,
      kvCache,
      kvCacheBytes: KVCache.bytesFor(engine.cacheLayout, contextLength, SESSION_SLACK, kvCache),
      slidingWindow: cfg.slidingWindow,
      backend: backend.name,
      threads: backend.threads ?? 1,
      numerics,
      hasChatTemplate: tokenizer.hasChatTemplate,
      loadSeconds,
      lora: adapters.defaultBlend?.label ?? null,
    };
  }

  /** Load a LoRA adapter (or a blend of several) that requests can choose with `adapter: name`. */
  addAdapter(name: string, input: LoraInput | LoraInput[]): void {
    this.alive();
    this.adapters.add(name, input);
  }

  private alive(): void {
    if (this.disposed) throw new LutraError('the model was disposed', 'disposed');
  }

  /** Text → ids; with `bos` (default) exactly one leading <bos>. */
  tokenize(text: string, opts: { bos?: boolean } = {}): number[] {
    if (typeof text !== 'string') throw new LutraError('tokenize: expected a string');
    return this.tokenizer.encode(text, { bos: opts.bos ?? true });
  }

  /** Ids → text; special tokens are left out unless `skipSpecial` is false. */
  detokenize(ids: number[], opts: { skipSpecial?: boolean } = {}): string {
    checkIds(ids, this.engine.vocabSize, 'detokenize');
    return this.tokenizer.decode(ids, opts.skipSpecial ?? true);
  }

  /** The model's chat template applied to `messages` (ending with the model's turn opener by default). */
  applyChatTemplate(messages: ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): string {
    checkMessages(messages);
    return this.tokenizer.renderChat(messages, opts.addGenerationPrompt ?? true);
  }

  /** Prompt ids of a completion request. */
  promptIds(prompt: string | number[], bos = true): number[] {
    if (Array.isArray(prompt)) {
      checkIds(prompt, this.engine.vocabSize, 'prompt');
      if (prompt.length === 0) throw new LutraError('prompt: expected at least one token');
      return prompt.slice();
    }
    if (typeof prompt !== 'string') throw new LutraError('prompt: expected a string or an array of token ids');
    return this.tokenize(prompt, { bos });
  }

  /** Prompt ids of a chat request: the template applied, ending with the model's turn. */
  chatIds(messages: ChatMessage[]): number[] {
    checkMessages(messages);
    return this.tokenizer.encodeChat(messages, true);
  }

  /** Stream a completion of a raw text prompt (no chat template). */
  stream(prompt: string | number[], opts: CompletionOptions = {}): AsyncGenerator<GenerationChunk, GenerationResult> {
    this.alive();
    checkOptionKeys(opts, [...GENERATE_KEYS, 'adapter', 'bos'], 'completion options');
    return this.run(this.promptIds(prompt, opts.bos ?? true), opts);
  }

  /** Complete a raw text prompt; resolves when generation ends. */
  async complete(prompt: string | number[], opts: CompletionOptions = {}): Promise<GenerationResult> {
    return drain(this.stream(prompt, opts));
  }

  /** Stream the model's answer to a conversation (the chat template applied). */
  streamChat(messages: ChatMessage[], opts: ChatOptions = {}): AsyncGenerator<GenerationChunk, GenerationResult> {
    this.alive();
    checkOptionKeys(opts, [...GENERATE_KEYS, 'adapter'], 'chat options');
    return this.run(this.chatIds(messages), opts);
  }

  /** The model's answer to a conversation; resolves when generation ends. */
  async chat(messages: ChatMessage[], opts: ChatOptions = {}): Promise<GenerationResult> {
    return drain(this.streamChat(messages, opts));
  }

  /** Run one request on a pooled session: the lease is held while the stream is consumed. */
  async *run(ids: number[], opts: GenerateOptions & AdapterOption): AsyncGenerator<GenerationChunk, GenerationResult> {
    checkSignal(opts.signal); // before the pool waits on it
    const lora = this.adapters.resolve(opts.adapter);
    let lease: Lease;
    try {
      lease = await this.pool.acquire(ids, opts.signal, lora);
    } catch (e) {
      if ((e as Error).name !== 'AbortError') throw e;
      yield { text: '', tokenIds: [], finishReason: 'abort' };
      return aborted(ids.length);
    }
    try {
      return yield* generate(lease.session, this.tokenizer, ids, opts);
    } finally {
      lease.release();
    }
  }

  /** A conversation that keeps its KV cache between turns. */
  createChatSession(opts: ChatSessionOptions = {}): ChatSession {
    this.alive();
    checkOptionKeys(opts, ['system', 'contextLength', 'adapter'], 'chat session options');
    const s = new ChatSession(this, opts);
    this.sessions.add(s);
    return s;
  }

  /** @internal */
  forget(s: ChatSession): void {
    this.sessions.delete(s);
  }

  /**
   * Teacher-forced scoring: log-probabilities of each token of `input` given the ones before it
   * (float64 log-softmax over the full vocabulary, as the divergence harness computes them).
   */
  async logProbs(input: string | number[], opts: LogProbsOptions = {}): Promise<LogProbsResult> {
    this.alive();
    checkOptionKeys(opts, ['topK', 'bos', 'adapter'], 'logProbs options');
    const ids = this.promptIds(input, opts.bos ?? true);
    const k = opts.topK ?? 0;
    if (!Number.isInteger(k) || k < 0 || k > 100) throw new LutraError(`topK ${k}: expected an integer in [0, 100]`);
    if (ids.length < 2) throw new LutraError('logProbs: expected at least two tokens (the first is given, the rest are scored)');
    if (ids.length > this.engine.cfg.maxPositions) {
      throw new LutraError(`logProbs: ${ids.length} tokens exceed max_position_embeddings ${this.engine.cfg.maxPositions}`, 'context_length_exceeded');
    }
    const lora = this.adapters.resolve(opts.adapter);
    const session = new Session(this.engine, { contextLength: ids.length, prefillBatch: this.pool.opts.prefillBatch, lora, kvType: this.pool.opts.kvType });
    const logProbs: number[] = [];
    const top: TokenLogProb[][] = [];
    try {
      session.prefillEach(ids.slice(0, -1), (row, i) => {
        const lp = logSoftmax(row);
        logProbs.push(lp[ids[i + 1]]);
        if (k > 0) top.push(topK(lp, k));
      });
    } finally {
      session.dispose();
    }
    const nll = -logProbs.reduce((a, b) => a + b, 0);
    return { tokenIds: ids, logProbs, ...(k > 0 ? { top } : {}), nll, perplexity: Math.exp(nll / logProbs.length) };
  }

  /** Free the KV caches, worker threads and memory. The model cannot be used after. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const s of [...this.sessions]) s.dispose();
    this.pool.close();
    this.engine.backend.dispose?.();
  }
}


function aborted(promptTokens: number): GenerationResult {
  return {
    text: '',
    tokenIds: [],
    finishReason: 'abort',
    stoppedBy: 'abort',
    usage: { promptTokens, cachedTokens: 0, completionTokens: 0 },
    timings: { promptEvaluated: 0, prefillMs: 0, decodeSteps: 0, decodeMs: 0 },
  };
}

function topK(lp: Float64Array, k: number): TokenLogProb[] {
  const best: TokenLogProb[] = [];
  for (let i = 0; i < lp.length; i++) {
    if (best.length < k || lp[i] > best[best.length - 1].logProb) {
      best.push({ id: i, logProb: lp[i] });
      best.sort((a, b) => b.logProb - a.logProb || a.id - b.id);
      if (best.length > k) best.pop();
    }
  }
  return best;
}

function checkIds(ids: unknown, vocab: number, what: string): void {
  if (!Array.isArray(ids) || ids.some((id) => !Number.isInteger(id) || id < 0 || id >= vocab)) {
    throw new LutraError(`${what}: expected an array of token ids in [0, ${vocab})`);
  }
}

function checkMessages(messages: unknown): asserts messages is ChatMessage[] {
  if (!Array.isArray(messages) || messages.length === 0) throw new LutraError('messages: expected a non-empty array of {role, content}');
  messages.forEach((m, i) => {
    if (typeof m !== 'object' || m === null) throw new LutraError(`messages[${i}]: expected an object with role and content`);
    const { role, content } = m as Record<string, unknown>;
    if (role !== 'system' && role !== 'user' && role !== 'assistant') {
      throw new LutraError(`messages[${i}].role: expected "system", "user" or "assistant", got ${JSON.stringify(role)}`);
    }
    if (typeof content !== 'string') throw new LutraError(`messages[${i}].content: expected a string`);
  });
}
