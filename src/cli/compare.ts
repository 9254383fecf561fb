// `lutra compare`: the divergence harness. The engine-agnostic work is in
// src/verify/compare.ts; this file turns flags into runners and prompts, and writes the outputs.
import { availableParallelism } from 'node:os';
import type { Command, Flags } from './common.js';
import { LutraError } from '../util/errors.js';
import { parseNumerics } from '../fp16/numerics.js';
import { activationsFlag, kvFlag, modelLabel, onOverflowFlag } from './model-flags.js';
import { parseLoraSpec } from '../adapters/lora.js';
import { PROMPT_OPTIONS, hasPrompt, readPrompt } from './prompt.js';
import type { GemmaTokenizer } from '../tokenizer/tokenizer.js';
import { readDataset, type PromptItem } from '../verify/dataset.js';
import {
  checkLayersComparable, comparePrompt, evaluateGates, LlamaCppRunner, LutraRunner, parseGates, type LutraRunnerOptions, parseRunnerSpec, promptMetrics,
  repetitionFlags, summarize, type DriverRole, type Gate, type Runner,
} from '../verify/compare.js';
import { fmt, formatGates, formatTable, writeOutputs, LAYER_COSINE_GATE, type ResultRecord, type SummaryFile } from '../verify/report.js';

interface PromptSpec extends Omit<PromptItem, 'prompt'> {
  prompt: string | null;
  ids: number[];
}

function parsePromptIds(text: string): number[] {
  const parts = text.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (parts.length === 0) throw new LutraError('--prompt-ids: no token ids given (expected e.g. 2,3689,563)');
  return parts.map((p) => {
    if (!/^\d+$/.test(p)) throw new LutraError(`--prompt-ids: "${p}" is not a non-negative integer token id`);
    return Number(p);
  });
}

async function openRunner(spec: string, backend: string, lutra: LutraRunnerOptions, contextSize: number, threads: number): Promise<Runner> {
  const { engine, path } = parseRunnerSpec(spec);
  if (engine === 'llama.cpp') return LlamaCppRunner.open(spec, path, contextSize, threads);
  return LutraRunner.open(path, backend, lutra);
}

function overflowsOf(r: Runner): string[] {
  return r instanceof LutraRunner ? r.overflows : [];
}

/** The lutra options of one side: --candidate-numerics / --candidate-activations, or the reference's. */
function sideOptions(flags: Flags, side: 'candidate' | 'reference', prefillBatch: number, threads: number | undefined): LutraRunnerOptions {
  const spec = flags.optionalString(`${side}-numerics`);
  return {
    prefillBatch,
    threads,
    numerics: spec === undefined ? undefined : parseNumerics(spec, `--${side}-numerics`),
    onOverflow: onOverflowFlag(flags),
    activations: activationsFlag(flags, `${side}-activations`),
    lora: flags.strings(`${side}-lora`).map((v) => parseLoraSpec(v, `--${side}-lora`)),
    kvType: kvFlag(flags, `${side}-kv`, 'f32'), // the harness measures weights and numerics, not the cache, unless asked
  };
}

export const compareCommand: Command = {
  name: 'compare',
  summary: 'divergence harness: KL, correlation, match and per-layer cosine of a candidate against a reference',
  positionals: true,
  usage:
    'lutra compare CANDIDATE --reference REF (-p TEXT | --prompt-file FILE | --prompt-ids 2,3689,... | --dataset FILE.jsonl) [-n 100] ' +
    '[--driver candidate|reference] [--no-template] [--out-dir DIR] [--gate "kl<0.01,corr>0.99,match>0.98"] [--layers] [--stop-at-eos] [--backend wasm|reference]',
  options: {
    reference: { type: 'string', arg: 'REF', help: 'the reference model: a model folder, or gguf:FILE run through llama.cpp (required)' },
    prompt: { ...PROMPT_OPTIONS.prompt, help: 'one prompt; - reads it from standard input' },
    'prompt-file': { ...PROMPT_OPTIONS['prompt-file'], help: 'one prompt, read from FILE (UTF-8)' },
    'prompt-ids': { type: 'string', arg: 'IDS', help: 'one prompt as comma-separated token ids, fed as given (no template, no <bos> added)' },
    dataset: { type: 'string', arg: 'FILE', help: 'JSONL prompts: {"id", "prompt"|"text"|"input", other fields carried}; plain lines are prompts' },
    'max-tokens': { type: 'string', short: 'n', arg: 'N', help: 'steps per prompt (exactly N unless --stop-at-eos)', default: '100' },
    driver: { type: 'string', arg: 'WHO', help: 'which model generates greedily: candidate or reference; the other is teacher-forced', default: 'candidate' },
    'no-template': { type: 'boolean', help: 'tokenize prompts as plain text after <bos>, without the chat template' },
    'stop-at-eos': { type: 'boolean', help: "stop a prompt at the driver's <eos> or end-of-turn token (kept as the last step)" },
    'out-dir': { type: 'string', arg: 'DIR', help: 'write results.jsonl, summary.json, report.md and report.html here' },
    gate: { type: 'string', arg: 'SPEC', help: 'thresholds on the summary, e.g. "kl<0.01,corr>0.99,match>0.98"; exit status 1 if one fails' },
    layers: { type: 'boolean', help: 'cosine of the residual stream after every layer at every position, through the stack and with each layer on the reference\'s input (two lutra models, same architecture)' },
    'layer-threshold': { type: 'string', arg: 'C', help: 'per-layer cosine gate for --layers', default: String(LAYER_COSINE_GATE) },
    backend: { type: 'string', arg: 'NAME', help: 'compute backend of lutra models: wasm (SIMD kernels on worker threads) or reference (the plain-TypeScript oracle, f64 sums, several times slower)', default: 'wasm' },
    'candidate-backend': { type: 'string', arg: 'NAME', help: 'compute backend for a lutra candidate', default: '--backend' },
    'reference-backend': { type: 'string', arg: 'NAME', help: 'compute backend for a lutra reference', default: '--backend' },
    threads: { type: 'string', short: 't', arg: 'N', help: 'threads of the wasm backend', default: 'available cores' },
    'candidate-numerics': { type: 'string', arg: 'SPEC', help: 'numerics of a lutra candidate: f32, fp16, fp16,accumulate=fp16, fp16,clamp', default: "its meta.yaml's, else f32" },
    'reference-numerics': { type: 'string', arg: 'SPEC', help: 'numerics of a lutra reference', default: "its meta.yaml's, else f32" },
    'on-overflow': { type: 'string', arg: 'WHAT', help: 'fp16 numerics: error (stop at the first non-finite activation) or continue (report it and measure anyway)', default: 'error' },
    'candidate-lora': { type: 'string', multiple: true, arg: 'DIR[:W]', help: 'a LoRA adapter (PEFT folder) the lutra candidate runs with, unmerged, scaled by W (repeat to blend)' },
    'reference-lora': { type: 'string', multiple: true, arg: 'DIR[:W]', help: 'a LoRA adapter the lutra reference runs with (repeat to blend)' },
    'candidate-kv': { type: 'string', arg: 'TYPE', help: "a lutra candidate's KV cache type: f32 or f16", default: 'f32' },
    'reference-kv': { type: 'string', arg: 'TYPE', help: "a lutra reference's KV cache type: f32 or f16", default: 'f32' },
    'candidate-activations': { type: 'string', arg: 'KIND', help: "a lutra candidate's int8/int4/LUT matmul inputs: q8 or f32", default: 'q8' },
    'reference-activations': { type: 'string', arg: 'KIND', help: "a lutra reference's int8/int4/LUT matmul inputs: q8 or f32", default: 'q8' },
    'prefill-batch': { type: 'string', arg: 'N', help: 'tokens per prefill batch for lutra models', default: '64' },
    'llama-threads': { type: 'string', arg: 'N', help: 'CPU threads for a gguf: model', default: 'min(4, cores)' },
  },
  notes:
    'CANDIDATE and REF are model folders (Hugging Face checkpoints) or gguf:FILE (llama.cpp; needs the node-llama-cpp dev dependency).\n' +
    'lutra models run on the wasm backend, whose decode and prefill kernels sum in different orders: a model against itself\n' +
    'gives a KL of 1e-12 or less there, and exactly 0 on --backend reference (6× slower on the demo model).\n' +
    'The driver generates greedily; the other model is teacher-forced on its tokens in one batched pass. Per step, over the full\n' +
    'vocabulary at temperature 1: KL(P_ref ‖ P_cand) in nats, Pearson correlation of the logits (of log-probabilities when a side\n' +
    'is llama.cpp), candidate entropy, top-1 match and the reference top-1 margin. Step 0 is the prediction after the prompt.\n' +
    'Gate metrics: kl, kl_max, corr, entropy, match, prompt_kl, layer (min per-layer cosine through the stack) and\n' +
    'single_layer (min cosine of any layer run on the reference\'s input), both with --layers; ops < <= > >=.\n' +
    'A failed layer gate names the first failing layer.\n' +
    'Progress goes to stderr, the summary table to stdout.',
  async run(flags: Flags, positionals: string[]) {
    const t0 = performance.now();
    if (positionals.length !== 1) throw new LutraError(`lutra compare: expected one CANDIDATE (a model folder or gguf:FILE), got ${positionals.length === 0 ? 'none' : positionals.join(' ')}`);
    const candSpec = positionals[0];
    const refSpec = flags.string('reference');
    const sources = ['prompt', 'prompt-file', 'prompt-ids', 'dataset'].filter((f) => flags.has(f));
    if (sources.length !== 1) throw new LutraError(`lutra compare: give exactly one of --prompt, --prompt-file, --prompt-ids, --dataset${sources.length ? ` (got ${sources.map((s) => '--' + s).join(', ')})` : ''}`);
    const promptText = hasPrompt(flags) ? readPrompt(flags, 'compare') : null;
    const maxTokens = flags.number('max-tokens', 100, { integer: true, min: 1 });
    const driver = flags.string('driver', 'candidate');
    if (driver !== 'candidate' && driver !== 'reference') throw new LutraError(`--driver ${driver}: expected candidate or reference`);
    const layers = flags.bool('layers');
    const layerThreshold = flags.number('layer-threshold', LAYER_COSINE_GATE, { min: -1, max: 1 });
    if (flags.has('layer-threshold') && !layers) throw new LutraError('--layer-threshold needs --layers');
    if (layers) {
      for (const s of [candSpec, refSpec]) {
        if (parseRunnerSpec(s).engine !== 'lutra') throw new LutraError(`--layers needs hidden states from both models; ${s} runs on llama.cpp, which does not expose them`);
      }
    }
    for (const [side, spec] of [['candidate', candSpec], ['reference', refSpec]] as const) {
      if (flags.has(`${side}-lora`) && parseRunnerSpec(spec).engine !== 'lutra') throw new LutraError(`--${side}-lora: ${spec} runs on llama.cpp; lutra applies adapters to lutra models only`);
    }
    const gates: Gate[] | null = flags.has('gate') ? parseGates(flags.string('gate'), layers) : null;
    const prefillBatch = flags.number('prefill-batch', 64, { integer: true, min: 1 });
    const threads = flags.number('llama-threads', Math.min(4, availableParallelism()), { integer: true, min: 1 });
    const template = !flags.bool('no-template');
    const stopAtEos = flags.bool('stop-at-eos');
    const backend = flags.string('backend', 'wasm');
    const candBackend = flags.string('candidate-backend', backend);
    const refBackend = flags.string('reference-backend', backend);
    for (const [flag, b] of [['--backend', backend], ['--candidate-backend', candBackend], ['--reference-backend', refBackend]]) {
      if (b !== 'wasm' && b !== 'reference') throw new LutraError(`${flag} ${b}: expected wasm or reference`);
    }
    const wasmThreads = flags.has('threads') ? flags.number('threads', 1, { integer: true, min: 1, max: 256 }) : undefined;
    const backendLabel = (b: string) => {
      if (b !== 'wasm') return b;
      const n = wasmThreads ?? availableParallelism();
      return `wasm, ${n} thread${n === 1 ? '' : 's'}`;
    };
    let items: PromptItem[] | null = null;
    if (flags.has('dataset')) items = readDataset(flags.string('dataset'));

    const runners: Runner[] = [];
    try {
      // lutra models first: one of them supplies the tokenizer, which fixes the prompt lengths
      // that a llama.cpp context is sized for.
      const specs = [
        { spec: candSpec, backend: candBackend, role: 'candidate', lutra: sideOptions(flags, 'candidate', prefillBatch, wasmThreads) },
        { spec: refSpec, backend: refBackend, role: 'reference', lutra: sideOptions(flags, 'reference', prefillBatch, wasmThreads) },
      ];
      const opened = new Map<string, Runner>();
      for (const s of specs) {
        if (parseRunnerSpec(s.spec).engine === 'lutra') {
          process.stderr.write(`loading ${s.role} ${modelLabel(parseRunnerSpec(s.spec).path)} (${backendLabel(s.backend)})...\n`);
          const r = await openRunner(s.spec, s.backend, s.lutra, 0, threads);
          runners.push(r);
          opened.set(s.role, r);
        }
      }
      const tokenizer: GemmaTokenizer | null = opened.get('candidate')?.tokenizer ?? opened.get('reference')?.tokenizer ?? null;

      let prompts: PromptSpec[];
      const encode = (text: string, where: string): number[] => {
        if (!tokenizer) throw new LutraError(`${where}: both models are gguf: files, which lutra cannot tokenize for; use --prompt-ids`);
        return template && tokenizer.hasChatTemplate ? tokenizer.encodeChat([{ role: 'user', content: text }]) : tokenizer.encode(text);
      };
      if (items) prompts = items.map((it) => ({ ...it, ids: encode(it.prompt, `${flags.string('dataset')}:${it.line}`) }));
      else if (promptText !== null) prompts = [{ id: 'prompt', prompt: promptText, line: 0, fields: {}, ids: encode(promptText, flags.has('prompt') ? '--prompt' : '--prompt-file') }];
      else prompts = [{ id: 'prompt-ids', prompt: null, line: 0, fields: {}, ids: parsePromptIds(flags.string('prompt-ids')) }];

      const contextSize = Math.max(...prompts.map((p) => p.ids.length)) + maxTokens;
      for (const s of specs) {
        if (parseRunnerSpec(s.spec).engine === 'llama.cpp') {
          process.stderr.write(`loading ${s.role} ${s.spec} (llama.cpp, context ${contextSize})...\n`);
          const r = await openRunner(s.spec, s.backend, s.lutra, contextSize, threads);
          runners.push(r);
          opened.set(s.role, r);
        }
      }
      const candidate = opened.get('candidate')!;
      const reference = opened.get('reference')!;
      if (candidate.vocabSize !== reference.vocabSize) {
        throw new LutraError(`the models have different vocabularies: ${candSpec} has ${candidate.vocabSize} tokens, ${refSpec} has ${reference.vocabSize}`);
      }
      if (layers) checkLayersComparable(candidate, reference);
      let stopIds: ReadonlySet<number> | undefined;
      if (stopAtEos) {
        if (!tokenizer) throw new LutraError('--stop-at-eos needs a tokenizer (a model folder on one side) to know the stop tokens');
        stopIds = tokenizer.stopIds;
      }
      const loadSeconds = (performance.now() - t0) / 1000;

      const results: ResultRecord[] = [];
      const runs = [];
      const tRun = performance.now();
      const tty = process.stderr.isTTY;
      for (const [i, p] of prompts.entries()) {
        const tag = `[${i + 1}/${prompts.length}] ${p.id}`;
        process.stderr.write(`${tag}: ${p.ids.length} prompt tokens, ${maxTokens} steps, driver ${driver}\n`);
        const tp = performance.now();
        const run = await comparePrompt(candidate, reference, p.ids, {
          maxTokens,
          driver: driver as DriverRole,
          stopIds,
          layerThreshold: layers ? layerThreshold : null,
          onStep: tty ? (k) => process.stderr.write(`\r${tag}: step ${k}/${maxTokens}`) : undefined,
        });
        runs.push(run);
        const m = promptMetrics(run);
        if (tty) process.stderr.write('\r\x1b[K');
        process.stderr.write(
          `${tag}: ${m.steps} steps in ${((performance.now() - tp) / 1000).toFixed(1)} s (driver ${run.seconds.driver.toFixed(1)} s, teacher ${run.seconds.teacher.toFixed(1)} s, metrics ${run.seconds.metrics.toFixed(1)} s): ` +
            `KL ${fmt(m.kl_mean)}, match ${(100 * m.match_rate).toFixed(1)}%, first divergence ${m.first_divergence ?? '–'}\n`,
        );
        const gen = run.tokens;
        results.push({
          id: p.id,
          fields: p.fields,
          prompt: p.prompt,
          ids: p.ids,
          generated_ids: gen,
          generated_text: tokenizer ? tokenizer.decode(gen, false) : null,
          driver,
          steps: m.steps,
          first_divergence: m.first_divergence,
          metrics: m,
          repetition: repetitionFlags(gen),
          layers: run.layers && {
            min_cosine: run.layers.minCosine, mean_cosine: run.layers.meanCosine, worst_position: run.layers.worstPosition, rel_error: run.layers.meanRelError,
            first_below: run.layers.firstBelow, threshold: run.layers.threshold,
            single: run.layers.single ? { min_cosine: run.layers.single.minCosine, mean_cosine: run.layers.single.meanCosine, rel_error: run.layers.single.meanRelError } : null,
          },
          per_step: {
            kl: run.steps.map((s) => s.kl),
            corr: run.steps.map((s) => (Number.isNaN(s.corr) ? null : s.corr)),
            entropy: run.steps.map((s) => s.entropy),
            match: run.steps.map((s) => (s.match ? 1 : 0)),
            margin: run.steps.map((s) => s.margin),
            ref_top: run.steps.map((s) => s.refTop),
            cand_top: run.steps.map((s) => s.candTop),
          },
          prompt_kl: run.promptKl,
          seconds: run.seconds,
        });
      }
      const runSeconds = (performance.now() - tRun) / 1000;
      const summary: SummaryFile = {
        ...summarize(runs, layers ? layerThreshold : null),
        candidate: candSpec,
        reference: refSpec,
        candidate_engine: candidate.description,
        reference_engine: reference.description,
        driver,
        max_tokens: maxTokens,
        template,
        stop_at_eos: stopAtEos,
        correlation_of: candidate.rowsAreLogProbs || reference.rowsAreLogProbs ? 'log-probabilities' : 'logits',
        seconds: { load: loadSeconds, run: runSeconds, total: (performance.now() - t0) / 1000 },
      };
      const overflows = { candidate: overflowsOf(candidate), reference: overflowsOf(reference) };
      if (overflows.candidate.length + overflows.reference.length > 0) {
        summary.overflows = overflows;
        for (const side of ['candidate', 'reference'] as const) {
          for (const o of overflows[side]) process.stderr.write(`warning: ${side}: ${o}\n`);
        }
      }
      const gateResults = gates ? evaluateGates(gates, summary) : null;
      if (gateResults) summary.gates = gateResults.map((g) => ({ gate: g.gate.text, actual: g.actual, pass: g.pass }));
      process.stdout.write(formatTable(results, summary) + '\n');
      if (gateResults) process.stdout.write(formatGates(gateResults) + '\n');
      if (flags.has('out-dir')) {
        const files = writeOutputs(flags.string('out-dir'), results, summary);
        process.stderr.write(`wrote ${files.join(', ')}\n`);
      }
      const failed = gateResults?.filter((g) => !g.pass) ?? [];
      if (failed.length) {
        const at = (g: (typeof failed)[number]) => (g.firstLayer === undefined ? '' : `, first failing layer ${g.firstLayer}`);
        throw new LutraError(`gate failed: ${failed.map((g) => `${g.gate.metric} = ${fmt(g.actual, 6)} (needs ${g.gate.op} ${g.gate.value}${at(g)})`).join('; ')}`);
      }
    } finally {
      for (const r of runners) {
        await r.dispose();
        if (r instanceof LutraRunner) r.model.backend.dispose?.();
      }
    }
  },
};
