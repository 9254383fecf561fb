// llama.cpp as an independent oracle, through node-llama-cpp (a devDependency, imported lazily
// so that the runtime CLI never needs it).
//
// teacherForced(ids) returns, for every position t, log p(next token | ids[0..t]) over the whole
// vocabulary, from one batched `sequence.controlledEvaluate(...)` with `generateNext` set on every
// item and no sampling options: node-llama-cpp's default sampler config then has temperature 0,
// whose chain is greedy-only, so nothing is cut or reweighted. The returned Map must have n_vocab
// entries (checked). Two sources, same cost:
//  - 'logits' (default): the raw logits; the log-softmax is computed here in float64.
//  - 'probabilities' (`generateNext: {probabilities: true}`): llama.cpp's float32 softmax
//    (max-subtracted expf, divided by a float32 sum over 262k terms). Measured: that sum is off by
//    up to ~6e-4 relative, so every log p is shifted by that much; we renormalise in float64, which
//    removes the shift. expf underflows to 0 for tokens ~104 nats below the top one; those get
//    LOG_PROB_FLOOR.
// Tokens missing from the map (there should be none) get LOG_PROB_FLOOR in both cases.
//
// Defaults chosen for an oracle rather than for speed: CPU only (`gpu: false`), 1 thread,
// KV cache F32 (llama.cpp's default is F16: pass kvCacheType 'f16' to reproduce stock llama.cpp;
// node-llama-cpp exposes it as the experimental createContext options
// experimentalKvCacheKeyType/ValueType), and flash attention off (classic KQ matmul + softmax).
//
// Known llama.cpp CPU numerics (not bugs of the export): GELU is an f16 table lookup,
// f16(gelu(f16(x))) for |x| < 10 (GGML_GELU_FP16 in ggml-cpu/vec.h), which alone moves log-probs of
// a random tiny model by ~5e-3 against an exact-GELU reference; F16/Q8_0 weights make the matmuls
// convert activations to F16/Q8_0 as well.
import type { ControlledEvaluateInputItem, Llama, LlamaContext, LlamaContextSequence, LlamaModel, Token } from 'node-llama-cpp';
import { LutraError } from '../util/errors.js';
import { readGguf } from '../io/gguf.js';

/** log(1e-45): below the smallest positive float32 (1.4e-45), so below any probability llama.cpp can report. */
export const LOG_PROB_FLOOR = Math.log(1e-45);

/**
 * Measured on this project's 2-core build machine (1 thread, the other core busy with a training
 * job), random 64-hidden 8-layer gemma3 with the real 262144-token vocabulary: 128 teacher-forced
 * positions take 18.0 s with source 'logits' and 15.9 s with 'probabilities' (≈ 0.13 s per
 * position). The forward pass itself is ~1 ms per token here (20 tokens without distributions:
 * 11 ms); almost all of the time is node-llama-cpp copying 2 × 262144 numbers per position from
 * C++ into a JS array and a Map (the 'confidence'-only path already costs ~37 ms per position).
 * Budget ~0.15 s per position for a 262k vocabulary on top of the model's own compute.
 * KV cache F16 instead of F32 moved log-probs by up to 8.6e-3 (KL ≤ 1.6e-7 nats) on that model.
 */
export const MEASURED_SECONDS_PER_128_POSITIONS_262K_VOCAB = 18;

export interface LlamaCppOracleOptions {
  /** CPU threads for evaluation (default 1). */
  threads?: number;
  /** Context size in tokens (default 1024); teacherForced() accepts at most this many ids. */
  contextSize?: number;
  /** Tokens per decode batch (default min(512, contextSize)). */
  batchSize?: number;
  /** KV cache element type (default 'f32'; llama.cpp's own default is 'f16'). */
  kvCacheType?: 'f16' | 'f32';
  /** Flash attention (default false). */
  flashAttention?: boolean;
  /** Where the distribution comes from (default 'logits'); teacherForced() can override it. */
  source?: 'probabilities' | 'logits';
}

type NodeLlamaCpp = typeof import('node-llama-cpp');

let llamaPromise: Promise<{ mod: NodeLlamaCpp; llama: Llama }> | undefined;

async function getLlamaOnce(): Promise<{ mod: NodeLlamaCpp; llama: Llama }> {
  llamaPromise ??= (async () => {
    let mod: NodeLlamaCpp;
    try {
      mod = await import('node-llama-cpp');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') {
        throw new LutraError('the llama.cpp oracle needs the node-llama-cpp package (a devDependency of lutra); install it with `npm install --include=dev`');
      }
      throw e;
    }
    // maxThreads 0: no instance-wide cap, so each context's `threads` is used as given.
    const llama = await mod.getLlama({ gpu: false, build: 'never', logLevel: mod.LlamaLogLevel.warn, maxThreads: 0, progressLogs: false });
    return { mod, llama };
  })();
  try {
    return await llamaPromise;
  } catch (e) {
    llamaPromise = undefined;
    throw e;
  }
}

export class LlamaCppOracle {
  private constructor(
    readonly path: string,
    /** n_vocab of the model (length of every returned distribution). */
    readonly vocabSize: number,
    readonly contextSize: number,
    private readonly source: 'probabilities' | 'logits',
    private model: LlamaModel,
    private context: LlamaContext,
    private sequence: LlamaContextSequence,
  ) {}

  static async load(ggufPath: string, opts: LlamaCppOracleOptions = {}): Promise<LlamaCppOracle> {
    const threads = opts.threads ?? 1;
    const contextSize = opts.contextSize ?? 1024;
    if (!Number.isInteger(threads) || threads < 1) throw new LutraError(`llama.cpp oracle: threads must be a positive integer, got ${threads}`);
    if (!Number.isInteger(contextSize) || contextSize < 1) throw new LutraError(`llama.cpp oracle: contextSize must be a positive integer, got ${contextSize}`);
    // n_vocab is the length of tokenizer.ggml.tokens (llama.cpp checks token_embd against it).
    const file = readGguf(ggufPath);
    const tokens = file.metadata.get('tokenizer.ggml.tokens');
    if (!Array.isArray(tokens)) throw new LutraError(`${ggufPath}: no tokenizer.ggml.tokens array; llama.cpp cannot load it`);
    const vocabSize = tokens.length;

    const { mod, llama } = await getLlamaOnce();
    let model: LlamaModel;
    try {
      model = await llama.loadModel({ modelPath: ggufPath, gpuLayers: 0, defaultContextFlashAttention: false });
    } catch (e) {
      throw new LutraError(`${ggufPath}: llama.cpp could not load the model: ${(e as Error).message}`);
    }
    const kv = opts.kvCacheType ?? 'f32';
    if (kv !== 'f16' && kv !== 'f32') throw new LutraError(`llama.cpp oracle: kvCacheType must be "f16" or "f32", got ${String(kv)}`);
    const kvType = kv === 'f32' ? mod.GgmlType.F32 : mod.GgmlType.F16;
    let context: LlamaContext;
    try {
      context = await model.createContext({
        contextSize,
        batchSize: opts.batchSize ?? Math.min(512, contextSize),
        sequences: 1,
        threads: { ideal: threads, min: threads },
        flashAttention: opts.flashAttention ?? false,
        experimentalKvCacheKeyType: kvType,
        experimentalKvCacheValueType: kvType,
        ignoreMemorySafetyChecks: true,
        failedCreationRemedy: false,
      });
    } catch (e) {
      await model.dispose();
      throw new LutraError(`${ggufPath}: llama.cpp could not create a context: ${(e as Error).message}`);
    }
    const sequence = context.getSequence();
    return new LlamaCppOracle(ggufPath, vocabSize, context.contextSize, opts.source ?? 'logits', model, context, sequence);
  }

  /** Actual KV cache types of the context (GgmlType ids: 0 = F32, 1 = F16). */
  get kvCacheTypes(): { key: number; value: number } {
    return { key: this.context.kvCacheKeyType, value: this.context.kvCacheValueType };
  }

  /**
   * For every t, the log-probabilities of the token following ids[0..t] (length vocabSize each).
   * The sequence starts empty on every call (no BOS is added: pass it in `ids`).
   */
  async teacherForced(ids: number[], opts: { source?: 'probabilities' | 'logits' } = {}): Promise<Float32Array[]> {
    if (ids.length === 0) return [];
    if (ids.length > this.contextSize) {
      throw new LutraError(`llama.cpp oracle: ${ids.length} tokens exceed the context size ${this.contextSize}; load with a larger contextSize`);
    }
    for (let i = 0; i < ids.length; i++) {
      const t = ids[i]!;
      if (!Number.isInteger(t) || t < 0 || t >= this.vocabSize) throw new LutraError(`llama.cpp oracle: token id ${t} at position ${i} is outside the vocabulary (0..${this.vocabSize - 1})`);
    }
    const V = this.vocabSize;
    const source = opts.source ?? this.source;
    const useLogits = source === 'logits';
    const out: Float32Array[] = new Array(ids.length);
    const problems: string[] = [];
    await this.sequence.clearHistory();
    try {
      const gen = useLogits ? { logits: true } : { probabilities: true };
      // node-llama-cpp brands token ids (`Token = number & {__token: never}`).
      const items: ControlledEvaluateInputItem[] = ids.map((t) => [t as Token, { generateNext: gen }]);
      await this.sequence.controlledEvaluate(
        items,
        {
          // Convert each map as soon as it arrives and drop it: 262k-entry Maps for every
          // position would otherwise all stay alive until the call returns (~10 MB each).
          onTokenResult: (index, result) => {
            const map = useLogits ? result.next.logits : result.next.probabilities;
            if (!map) {
              problems.push(`position ${index}: no ${source} returned`);
              return;
            }
            if (map.size !== V) problems.push(`position ${index}: ${map.size} entries, expected n_vocab = ${V}`);
            out[index] = useLogits ? logSoftmax(map, V) : logProbs(map, V);
            delete result.next.probabilities;
            delete result.next.logits;
          },
        },
      );
    } finally {
      await this.sequence.clearHistory();
    }
    if (problems.length > 0) throw new LutraError(`${this.path}: llama.cpp oracle: ${problems.slice(0, 3).join('; ')}`);
    for (let i = 0; i < out.length; i++) {
      if (!out[i]) throw new LutraError(`${this.path}: llama.cpp oracle returned nothing for position ${i}`);
    }
    return out;
  }

  /**
   * Greedy continuation (temperature 0, no penalties) of `ids`: up to maxTokens new ids, stopping
   * early after one in `stopIds`. Added for `lutra compare` with a gguf: driver; the sequence
   * starts empty and is cleared afterwards, as in teacherForced().
   */
  async greedy(ids: number[], maxTokens: number, stopIds?: ReadonlySet<number>): Promise<number[]> {
    if (ids.length === 0) throw new LutraError('llama.cpp oracle: greedy() needs at least one prompt token');
    if (ids.length + maxTokens > this.contextSize) {
      throw new LutraError(`llama.cpp oracle: ${ids.length} + ${maxTokens} tokens exceed the context size ${this.contextSize}; load with a larger contextSize`);
    }
    const out: number[] = [];
    if (maxTokens <= 0) return out;
    await this.sequence.clearHistory();
    try {
      for await (const t of this.sequence.evaluate(ids as Token[], { temperature: 0 })) {
        out.push(t);
        if (out.length >= maxTokens || stopIds?.has(t)) break;
      }
    } finally {
      await this.sequence.clearHistory();
    }
    return out;
  }

  async dispose(): Promise<void> {
    await this.context.dispose();
    await this.model.dispose();
  }
}

function logProbs(map: Map<number, number>, V: number): Float32Array {
  // Renormalise in float64: llama.cpp divides by a float32 sum of V terms.
  let sum = 0;
  for (const p of map.values()) if (p > 0) sum += p;
  const logSum = Math.log(sum);
  const lp = new Float32Array(V).fill(LOG_PROB_FLOOR);
  for (const [tok, p] of map) {
    if (tok >= 0 && tok < V && p > 0) lp[tok] = Math.log(p) - logSum;
  }
  return lp;
}

function logSoftmax(map: Map<number, number>, V: number): Float32Array {
  let max = -Infinity;
  for (const v of map.values()) if (v > max) max = v;
  let sum = 0;
  for (const v of map.values()) sum += Math.exp(v - max);
  const lse = max + Math.log(sum);
  const lp = new Float32Array(V).fill(LOG_PROB_FLOOR);
  for (const [tok, v] of map) if (tok >= 0 && tok < V) lp[tok] = v - lse;
  return lp;
}
