import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import type { Command } from './common.js';
import { MODEL_OPTIONS } from './common.js';
import { kvFlag, openModelWeights, simdFlag, threadsFlag } from './model-flags.js';
import { benchTokens, timeModel, type LutraTiming } from '../bench/timing.js';
import { exportTypeFor, ggufFor, matrixFormats } from '../bench/gguf.js';
import { measureBandwidthIsolated } from '../bench/bandwidth.js';
import { timeLlamaCpp, type LlamaCppTiming } from '../bench/llama-cpp.js';
import { isGgufPath } from '../io/gguf-source.js';
import { LutraError } from '../util/errors.js';

const MB = 1e6;
/** The memory budget: peak RSS ≤ 1.3 × weight bytes + 300 MB. */
export const rssLimit = (weightBytes: number) => 1.3 * weightBytes + 300 * MB;

// The bench sizes its own context (prefill + decode) and stops on an fp16 overflow; the other model flags apply as everywhere.
const { context: _context, 'on-overflow': _onOverflow, ...BENCH_MODEL_OPTIONS } = MODEL_OPTIONS;

export const benchCommand: Command = {
  name: 'bench',
  summary: 'time prefill and decode, against the machine\'s read bandwidth and optionally llama.cpp',
  usage: 'lutra bench --model DIR|FILE.gguf [--prefill 256 | --context N] [--decode 64] [--threads N] [--kv f16|f32] [--vs-llama-cpp [--llama-kv f16|f32]] [--json]',
  options: {
    ...BENCH_MODEL_OPTIONS,
    model: { ...MODEL_OPTIONS.model, arg: 'DIR|FILE', help: 'model folder (checkpoint or lutra package) or a .gguf file' },
    'prefill-batch': { ...MODEL_OPTIONS['prefill-batch'], default: 'all --prefill tokens in one pass' },
    prefill: { type: 'string', arg: 'N', help: 'prompt tokens, fed in one batched pass', default: '256' },
    context: { type: 'string', short: 'c', arg: 'N', help: 'long-context run: a prompt of N tokens fed in passes of --prefill-batch (default 512), then --decode steps at that context; llama.cpp the same' },
    'llama-kv': { type: 'string', arg: 'TYPE', help: "llama.cpp's KV cache type: f16 or f32", default: "lutra's --kv" },
    decode: { type: 'string', arg: 'N', help: 'tokens decoded one at a time after the prompt', default: '64' },
    repeat: { type: 'string', arg: 'N', help: 'timed runs after a warm-up (fewer when they take over 20 s); the best counts', default: '3' },
    rounds: { type: 'string', arg: 'N', help: 'with --vs-llama-cpp: lutra then llama.cpp, N times over; the best of each side counts, so a burst of load from elsewhere on a shared machine hits neither side alone', default: '1' },
    'vs-llama-cpp': { type: 'boolean', help: 'also time llama.cpp on the same weights, exported to GGUF' },
    'llama-threads': { type: 'string', arg: 'LIST', help: 'thread counts tried for llama.cpp; the best counts', default: '1,2' },
    'probe-mib': { type: 'string', arg: 'MiB', help: 'buffer of the read-bandwidth probe', default: '1024' },
    json: { type: 'boolean', help: 'print one JSON object instead of the table' },
  },
  notes:
    'Effective bandwidth = weight bytes read per decoded token × decode tok/s. Weight bytes count every\n' +
    'matrix once (a tied embedding once, as the LM head) and the norms, from the loaded formats. The read\n' +
    'bandwidth is measured in the same run (build/probe.wasm over a large buffer in a child process, best of\n' +
    '1 and N threads). --vs-llama-cpp needs every matrix in one of int8:32 (Q8_0), int4:32 (Q4_0), f16 or f32\n' +
    '(exported bit-identically) or a .gguf model. Progress goes to stderr, results to stdout.',
  async run(flags) {
    if (flags.has('context') && flags.has('prefill')) throw new LutraError('--context N is a prompt of N tokens: give --context or --prefill, not both');
    const long = flags.has('context');
    const prefill = long ? flags.number('context', 4096, { integer: true, min: 1, max: 1 << 20 }) : flags.number('prefill', 256, { integer: true, min: 1, max: 1 << 20 });
    const kv = kvFlag(flags);
    const llamaKv = flags.string('llama-kv', kv);
    if (llamaKv !== 'f16' && llamaKv !== 'f32') throw new LutraError(`--llama-kv ${llamaKv}: expected f16 or f32`);
    if (flags.has('llama-kv') && !flags.bool('vs-llama-cpp')) throw new LutraError('--llama-kv needs --vs-llama-cpp');
    const decode = flags.number('decode', 64, { integer: true, min: 1, max: 1 << 20 });
    const repeat = flags.number('repeat', 3, { integer: true, min: 1, max: 100 });
    const rounds = flags.number('rounds', 1, { integer: true, min: 1, max: 20 });
    if (rounds > 1 && !flags.bool('vs-llama-cpp')) throw new LutraError('--rounds alternates lutra and llama.cpp: it needs --vs-llama-cpp (use --repeat for more lutra runs)');
    const probeMib = flags.number('probe-mib', 1024, { integer: true, min: 16, max: 3072 });
    const vs = flags.bool('vs-llama-cpp');
    simdFlag(flags); // checked here so a bad value fails before the slow part
    threadsFlag(flags);
    const say = (m: string) => process.stderr.write(`bench: ${m}\n`);

    const prefillBatch = flags.has('prefill-batch') ? flags.number('prefill-batch', prefill, { integer: true, min: 1 }) : long ? Math.min(512, prefill) : undefined;
    const llamaThreads = vs ? threadList(flags.string('llama-threads', '1,2')) : [];
    if (vs && flags.has('lora')) throw new LutraError('--lora with --vs-llama-cpp: llama.cpp would run the base model without the adapter; bench them apart');
    const given = flags.model();
    if (!existsSync(given)) throw new LutraError(`--model ${given}: not found; expected a model folder (checkpoint or lutra package) or a .gguf file`);
    // Fail before the slow part when llama.cpp cannot get the same weights.
    if (vs && !isGgufPath(given)) exportTypeFor(matrixFormats(given));
    // No tokenizer: the bench feeds token ids, and Gemma's 262k-entry tokenizer costs ~235 MB of RSS.
    const { model, dir, loadSeconds, lora } = openModelWeights(flags, { announce: say });
    say(`loaded in ${loadSeconds.toFixed(2)} s`);
    // Round 1's lutra timing first, before llama.cpp (in this process) adds its own memory: the
    // peak RSS is lutra's alone.
    let gguf: Awaited<ReturnType<typeof ggufFor>> | undefined;
    let t: Awaited<ReturnType<typeof timeModel>> | undefined;
    let l: Awaited<ReturnType<typeof timeLlamaCpp>> | undefined;
    try {
      for (let round = 1; round <= rounds; round++) {
        if (rounds > 1) say(`round ${round} of ${rounds}`);
        const tr = await timeModel(model, dir, { prefill, decode, repeat, prefillBatch, onProgress: say, lora, kvType: kv }, loadSeconds);
        t = t ? { ...t, ...bestOf(t, tr) } : tr;
        if (vs) {
          gguf ??= await ggufFor(dir, say); // after round 1's lutra timing, as the memory above
          const lr = await timeLlamaCpp(gguf.path, benchTokens(prefill, model.vocabSize), { prefill, decode, repeat, threads: llamaThreads, onProgress: say, batch: prefillBatch, kv: llamaKv });
          l = l ? { ...l, ...bestOfLlama(l, lr) } : lr;
        }
      }
    } finally {
      model.backend.dispose?.();
      gguf?.cleanup();
    }
    if (!t) throw new Error('bench: no timing');
    const rssLimitBytes = rssLimit(t.resident_weight_bytes);
    say(`measuring read bandwidth (${probeMib} MiB)`);
    const bw = await measureBandwidthIsolated({ threads: [...new Set([1, t.threads, availableParallelism()])], mib: probeMib });

    const result: Record<string, unknown> = {
      model: dir,
      backend: t.backend,
      threads: t.threads,
      simd: t.simd,
      prefill_tokens: prefill,
      prefill_batch: prefillBatch ?? prefill,
      decode_tokens: decode,
      kv,
      prefill_tok_s: t.prefill_tok_s,
      prefill_ms: t.prefill_ms,
      decode_tok_s: t.decode_tok_s,
      ms_per_token: t.ms_per_token,
      weight_bytes: t.weight_bytes,
      resident_weight_bytes: t.resident_weight_bytes,
      on_disk_weight_bytes: t.on_disk_weight_bytes,
      params_per_token: t.params_per_token,
      params_resident: t.params_resident,
      formats: t.formats,
      effective_gbs: t.effective_gbs,
      bandwidth_gbs: bw.gbs,
      bandwidth_threads: bw.threads,
      bandwidth_by_threads: bw.byThreads,
      bandwidth_pct: (100 * t.effective_gbs) / bw.gbs,
      peak_rss_bytes: t.peak_rss_bytes,
      rss_limit_bytes: rssLimitBytes,
      rss_ok: t.peak_rss_bytes <= rssLimitBytes,
      repetitions: t.repetitions,
      lora: lora?.label ?? null,
    };
    if (gguf && l) {
      result.llama_cpp = { ...l, gguf_type: gguf.type, kv: llamaKv };
      result.prefill_ratio = t.prefill_tok_s / l.prefill_tok_s;
      result.decode_ratio = t.decode_tok_s / l.decode_tok_s;
      result.rounds = rounds;
    }
    process.stdout.write(flags.bool('json') ? JSON.stringify(result) + '\n' : table(result));
  },
};

/** The better prefill and the better decode of two lutra timings (the memory figures stay round 1's). */
function bestOf(a: LutraTiming, b: LutraTiming): Partial<LutraTiming> {
  const p = b.prefill_tok_s > a.prefill_tok_s ? b : a, d = b.decode_tok_s > a.decode_tok_s ? b : a;
  return {
    prefill_tok_s: p.prefill_tok_s,
    prefill_ms: p.prefill_ms,
    decode_tok_s: d.decode_tok_s,
    ms_per_token: d.ms_per_token,
    effective_gbs: d.effective_gbs,
    repetitions: a.repetitions + b.repetitions,
  };
}

function bestOfLlama(a: LlamaCppTiming, b: LlamaCppTiming): Partial<LlamaCppTiming> {
  const p = b.prefill_tok_s > a.prefill_tok_s ? b : a, d = b.decode_tok_s > a.decode_tok_s ? b : a;
  return { prefill_tok_s: p.prefill_tok_s, prefill_threads: p.prefill_threads, decode_tok_s: d.decode_tok_s, threads: d.threads, byThreads: [...a.byThreads, ...b.byThreads] };
}

function threadList(v: string): number[] {
  const list = v.split(',').map(Number);
  if (list.length === 0 || list.some((n) => !Number.isInteger(n) || n < 1 || n > 256)) throw new LutraError(`--llama-threads ${v}: expected thread counts like 1,2`);
  return [...new Set(list)];
}

function table(r: Record<string, any>): string {
  const f = (x: number, d = 1) => x.toFixed(d);
  const mb = (b: number) => `${f(b / MB)} MB`;
  const fmts = Object.entries(r.formats as Record<string, number>).map(([k, v]) => `${k} ${mb(v)}`).join(', ');
  const lines = [
    `lutra bench: ${r.model}${r.lora ? ` + LoRA ${r.lora}` : ''} (${r.backend}${r.simd ? ` ${r.simd} SIMD` : ''}, ${r.threads} thread${r.threads > 1 ? 's' : ''}; matrices ${fmts})`,
    `  prefill    ${r.prefill_tokens} tokens${r.prefill_batch < r.prefill_tokens ? ` in passes of ${r.prefill_batch}` : ''}: ${f(r.prefill_tok_s)} tok/s (${f(r.prefill_ms)} ms)`,
    `  decode     ${r.decode_tokens} tokens: ${f(r.decode_tok_s, 2)} tok/s, ${f(r.ms_per_token, 2)} ms/token`,
    `  bandwidth  ${mb(r.weight_bytes)} read per token (${(r.params_per_token / 1e6).toFixed(0)} M of ${(r.params_resident / 1e6).toFixed(0)} M weights) → effective ${f(r.effective_gbs, 2)} GB/s = ${f(r.bandwidth_pct)}% of the measured ${f(r.bandwidth_gbs, 2)} GB/s (${r.bandwidth_threads} probe thread${r.bandwidth_threads > 1 ? 's' : ''})`,
    `  memory     peak RSS ${mb(r.peak_rss_bytes)}; weights ${mb(r.resident_weight_bytes)}${r.on_disk_weight_bytes > 0 ? ` (plus ${mb(r.on_disk_weight_bytes)} of per-layer embeddings read from disk, not resident)` : ''}; limit 1.3 × weights + 300 MB = ${mb(r.rss_limit_bytes)}: ${r.rss_ok ? 'ok' : 'EXCEEDED'}`,
  ];
  if (r.llama_cpp) {
    const l = r.llama_cpp;
    const th = (n: number) => `${n} thread${n > 1 ? 's' : ''}`;
    const src = l.gguf_type === 'as is' ? 'the GGUF as given' : `${l.gguf_type.toUpperCase()} export, same weights`;
    lines.push(
      `  llama.cpp  ${src}, KV cache ${l.kv} (lutra's: ${r.kv}): prefill ${f(l.prefill_tok_s)} tok/s (${th(l.prefill_threads)}), decode ${f(l.decode_tok_s, 2)} tok/s (${th(l.threads)})`,
      `  ratio      lutra / llama.cpp: prefill ${f(r.prefill_ratio, 2)}×, decode ${f(r.decode_ratio, 2)}×${r.rounds > 1 ? ` (best of ${r.rounds} alternating rounds each)` : ''}`,
    );
  }
  return lines.join('\n') + '\n';
}
