// Prefill and decode timing of a lutra model: the numbers `lutra bench` and `lutra sweep` report.
import type { PreparedLora } from '../adapters/apply.js';
import { loadModel, makeBackend } from '../runtime/load.js';
import { Session } from '../runtime/session.js';
import type { CausalLM } from '../model/forward.js';
import { LutraError } from '../util/errors.js';
import { weightBytes } from './weights.js';
import type { SimdLevel } from '../backend/wasm/kernels.js';
import type { KvType } from '../backend/backend.js';

export interface TimeLutraOptions {
  /** Prompt tokens fed in one batched pass (logits for the last only). */
  prefill: number;
  /** Single-token steps after the prefill. */
  decode: number;
  /** Worker threads for the wasm backend (default: available cores). */
  threads?: number;
  /** The wasm kernels build (default 'auto'). */
  simd?: SimdLevel;
  /** 'wasm' (default) or 'reference'. */
  backend?: string;
  /** Tokens per prefill batch (default: all of them, one pass). */
  prefillBatch?: number;
  /** LoRA adapters applied (unmerged) while timing. */
  lora?: PreparedLora | null;
  /** KV cache type (default f32). */
  kvType?: KvType;
  /** Timed repetitions at most (default 3); the best is reported. */
  repeat?: number;
  /** No further repetition starts after this many seconds of timing (default 20). */
  budgetSeconds?: number;
  onProgress?: (message: string) => void;
}

export interface LutraTiming {
  prefill_tok_s: number;
  decode_tok_s: number;
  /** 1000 / decode_tok_s. */
  ms_per_token: number;
  /** Time to first token: the prefill pass including the last-position logits. */
  prefill_ms: number;
  /** Weight bytes read per decoded token (see weights.ts). */
  weight_bytes: number;
  /** All weight bytes held in memory. */
  resident_weight_bytes: number;
  /** Tables read row by row from disk and never held (Gemma 4's per-layer embeddings); 0 when none. */
  on_disk_weight_bytes: number;
  /** Weights (elements) read per decoded token: a mixture of experts' active parameters. */
  params_per_token: number;
  /** Weights (elements) held in memory. */
  params_resident: number;
  /** weight_bytes × decode_tok_s, in GB/s (1e9). */
  effective_gbs: number;
  /** Matrix bytes by format name. */
  formats: Record<string, number>;
  backend: string;
  threads: number;
  /** wasm: the kernels build ('relaxed' or 'baseline'); null for the reference backend. */
  simd: string | null;
  repetitions: number;
  /** Process peak RSS (bytes) after the timed runs: loading and decoding included. */
  peak_rss_bytes: number;
  load_seconds: number;
}

/** Deterministic pseudo-random ids away from the specials at the start of the vocabulary (and the image tokens at its end). */
export function benchTokens(n: number, vocab: number, seed = 1): number[] {
  const lo = Math.min(1000, Math.floor(vocab / 8));
  const hi = Math.max(lo + 1, Math.floor(vocab * 0.95));
  let s = seed >>> 0;
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return lo + (s % (hi - lo));
  });
}

/** Worker threads of a backend; wrappers (the fp16 numerics backend) keep the real one as `inner`. */
function backendThreads(b: unknown): number {
  const x = b as { threads?: number; inner?: unknown };
  return x.threads ?? (x.inner ? backendThreads(x.inner) : 1);
}

/** The wasm kernels build in use ('relaxed' or 'baseline'), null for other backends. */
function backendSimd(b: unknown): string | null {
  const x = b as { simd?: string; inner?: unknown };
  return x.simd ?? (x.inner ? backendSimd(x.inner) : null);
}

function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

/** One prefill then `decode` greedy steps; returns [prefill ms, decode ms]. */
function runOnce(session: Session, ids: number[], decode: number): [number, number] {
  session.reset();
  const t0 = performance.now();
  let logits = session.prefill(ids);
  const t1 = performance.now();
  for (let i = 0; i < decode; i++) logits = session.stepShared(argmax(logits)); // the path generate() takes
  return [t1 - t0, performance.now() - t1];
}

export function checkLengths(model: CausalLM, prefill: number, decode: number): void {
  if (!Number.isInteger(prefill) || prefill < 1) throw new LutraError(`--prefill ${prefill}: expected an integer ≥ 1`);
  if (!Number.isInteger(decode) || decode < 1) throw new LutraError(`--decode ${decode}: expected an integer ≥ 1`);
  if (prefill + decode > model.cfg.maxPositions) {
    throw new LutraError(`--prefill ${prefill} + --decode ${decode} exceed the model's max_position_embeddings ${model.cfg.maxPositions}`);
  }
}

/** Time an already loaded model; `dir` is where it came from (for its weight formats). */
export async function timeModel(model: CausalLM, dir: string, opts: TimeLutraOptions, loadSeconds = 0): Promise<LutraTiming> {
  const { prefill, decode } = opts;
  checkLengths(model, prefill, decode);
  const wb = weightBytes(dir, model);
  const session = new Session(model, { contextLength: prefill + decode, prefillBatch: opts.prefillBatch ?? prefill, lora: opts.lora, kvType: opts.kvType });
  const ids = benchTokens(prefill, model.vocabSize);
  const say = opts.onProgress ?? (() => {});
  // Warm-up: first calls grow scratch memory, compile and wake the workers. A shorter prompt keeps it cheap on big models;
  // 16 decode steps let the engine finish optimising the one-token kernels (with 2, the first timed
  // steps of a --context run, which has one repetition, still ran ~10% slower, EXPERIMENTS LC4).
  say('warm-up');
  runOnce(session, ids.slice(0, Math.min(prefill, 64)), Math.min(decode, 16));
  const repeat = Math.max(1, opts.repeat ?? 3);
  const budgetMs = 1000 * (opts.budgetSeconds ?? 20);
  let bestPrefill = Infinity;
  let bestDecode = Infinity;
  let reps = 0;
  const start = performance.now();
  while (reps < repeat && (reps === 0 || performance.now() - start < budgetMs)) {
    const [p, d] = runOnce(session, ids, decode);
    reps++;
    say(`run ${reps}: prefill ${((1000 * prefill) / p).toFixed(1)} tok/s, decode ${((1000 * decode) / d).toFixed(2)} tok/s`);
    bestPrefill = Math.min(bestPrefill, p);
    bestDecode = Math.min(bestDecode, d);
    await new Promise((r) => setImmediate(r)); // let progress output flush
  }
  const decodeTokS = (1000 * decode) / bestDecode;
  return {
    prefill_tok_s: (1000 * prefill) / bestPrefill,
    decode_tok_s: decodeTokS,
    ms_per_token: bestDecode / decode,
    prefill_ms: bestPrefill,
    weight_bytes: wb.perToken,
    resident_weight_bytes: wb.resident,
    on_disk_weight_bytes: wb.onDisk,
    params_per_token: wb.paramsPerToken,
    params_resident: wb.paramsResident,
    effective_gbs: (wb.perToken * decodeTokS) / 1e9,
    formats: wb.byFormat,
    backend: model.backend.name,
    threads: backendThreads(model.backend),
    simd: backendSimd(model.backend),
    repetitions: reps,
    peak_rss_bytes: process.resourceUsage().maxRSS * 1024,
    load_seconds: loadSeconds,
  };
}

/** Load `model` (folder or .gguf), time it, release the backend's workers. */
export async function timeLutra(model: string, opts: TimeLutraOptions): Promise<LutraTiming> {
  const backend = makeBackend(opts.backend ?? 'wasm', { threads: opts.threads, simd: opts.simd });
  try {
    const { model: m, loadSeconds } = loadModel(model, backend, { tokenizer: false });
    return await timeModel(m, model, opts, loadSeconds);
  } finally {
    backend.dispose?.();
  }
}
