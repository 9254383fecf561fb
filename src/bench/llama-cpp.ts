// llama.cpp timing through node-llama-cpp (a devDependency, imported lazily), CPU only, loaded the
// way src/verify/llama-cpp.ts does (gpu false, build 'never', no instance-wide thread cap).
//
// What is timed, to match timeModel() in timing.ts:
//  - prefill: from evaluate(ids) until its first token comes out: one batched pass over the
//    `prefill` ids (batchSize = prefill) including the last position's logits and a greedy pick;
//    lutra's prefill also computes the last logits (its argmax is part of its decode loop instead).
//  - decode: the next `decode` tokens, each one single-token evaluation plus a greedy pick, as
//    lutra's step(argmax(logits)). node-llama-cpp's per-token JS overhead is included.
// The KV cache is llama.cpp's default (F16) unless `kv` says F32 (lutra's cache type), and flash
// attention is off: stock CPU llama.cpp. A long prompt goes in batches of `batch` tokens.
import type { Llama, LlamaModel, Token } from 'node-llama-cpp';
import { LutraError } from '../util/errors.js';

export interface LlamaCppTimeOptions {
  prefill: number;
  decode: number;
  /** Thread counts to try (default [1, 2]); the best of each measure is reported. */
  threads?: number[];
  /** Timed repetitions per thread count at most (default 3). */
  repeat?: number;
  /** No further repetition starts after this many seconds per thread count (default 20). */
  budgetSeconds?: number;
  onProgress?: (message: string) => void;
  /** Tokens per prefill pass (default all of them). */
  batch?: number;
  /** KV cache type (default f16, llama.cpp's own). */
  kv?: 'f16' | 'f32';
}

export interface LlamaCppTiming {
  prefill_tok_s: number;
  decode_tok_s: number;
  /** Threads of the best decode. */
  threads: number;
  /** Threads of the best prefill. */
  prefill_threads: number;
  byThreads: { threads: number; prefill_tok_s: number; decode_tok_s: number }[];
}

async function getLlamaForBench(): Promise<Llama> {
  let mod: typeof import('node-llama-cpp');
  try {
    mod = await import('node-llama-cpp');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') {
      throw new LutraError('--vs-llama-cpp needs the node-llama-cpp package (a devDependency of lutra); install it with `npm install --include=dev`');
    }
    throw e;
  }
  return mod.getLlama({ gpu: false, build: 'never', logLevel: mod.LlamaLogLevel.error, maxThreads: 0, progressLogs: false });
}

export async function timeLlamaCpp(gguf: string, ids: number[], opts: LlamaCppTimeOptions): Promise<LlamaCppTiming> {
  const { prefill, decode } = opts;
  if (ids.length !== prefill) throw new Error(`timeLlamaCpp: ${ids.length} ids for prefill ${prefill}`);
  const say = opts.onProgress ?? (() => {});
  const llama = await getLlamaForBench();
  let model: LlamaModel;
  try {
    model = await llama.loadModel({ modelPath: gguf, gpuLayers: 0, defaultContextFlashAttention: false });
  } catch (e) {
    throw new LutraError(`${gguf}: llama.cpp could not load the model: ${(e as Error).message}`);
  }
  const byThreads: LlamaCppTiming['byThreads'] = [];
  try {
    for (const threads of opts.threads ?? [1, 2]) {
      const context = await model.createContext({
        contextSize: prefill + decode + 1,
        batchSize: Math.min(prefill, opts.batch ?? prefill),
        experimentalKvCacheKeyType: opts.kv === 'f32' ? 'F32' : 'F16',
        experimentalKvCacheValueType: opts.kv === 'f32' ? 'F32' : 'F16',
        sequences: 1,
        threads: { ideal: threads, min: threads },
        flashAttention: false,
        ignoreMemorySafetyChecks: true,
        failedCreationRemedy: false,
      });
      try {
        const seq = context.getSequence();
        const runOnce = async (prompt: number[], steps: number): Promise<[number, number]> => {
          await seq.clearHistory();
          const t0 = performance.now();
          let t1 = t0;
          let n = 0;
          for await (const _ of seq.evaluate(prompt as Token[], { temperature: 0 })) {
            if (n === 0) t1 = performance.now();
            if (++n > steps) break;
          }
          return [t1 - t0, performance.now() - t1];
        };
        say(`llama.cpp ${threads} thread${threads > 1 ? 's' : ''}: warm-up`);
        await runOnce(ids.slice(0, Math.min(prefill, 64)), Math.min(decode, 2));
        let bestP = Infinity;
        let bestD = Infinity;
        const start = performance.now();
        const repeat = Math.max(1, opts.repeat ?? 3);
        for (let r = 0; r < repeat && (r === 0 || performance.now() - start < 1000 * (opts.budgetSeconds ?? 20)); r++) {
          const [p, d] = await runOnce(ids, decode);
          say(`llama.cpp ${threads} thread${threads > 1 ? 's' : ''} run ${r + 1}: prefill ${((1000 * prefill) / p).toFixed(1)} tok/s, decode ${((1000 * decode) / d).toFixed(2)} tok/s`);
          bestP = Math.min(bestP, p);
          bestD = Math.min(bestD, d);
        }
        byThreads.push({ threads, prefill_tok_s: (1000 * prefill) / bestP, decode_tok_s: (1000 * decode) / bestD });
      } finally {
        await context.dispose();
      }
    }
  } finally {
    await model.dispose();
  }
  const bestBy = (k: 'prefill_tok_s' | 'decode_tok_s') => byThreads.reduce((a, b) => (b[k] > a[k] ? b : a));
  return {
    prefill_tok_s: bestBy('prefill_tok_s').prefill_tok_s,
    decode_tok_s: bestBy('decode_tok_s').decode_tok_s,
    threads: bestBy('decode_tok_s').threads,
    prefill_threads: bestBy('prefill_tok_s').threads,
    byThreads,
  };
}
