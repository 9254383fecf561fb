import type { Command } from './common.js';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { buildPlan } from '../quant/plan.js';
import { checkConvertPlan, convert } from '../quant/convert.js';
import { tensorProgress } from './progress.js';
import { checkAlpha } from '../fp16/scale.js';
import { auditFp16, ALPHA_TARGET, CALIBRATION_PROMPT, CALIBRATION_STEPS } from '../fp16/audit.js';
import { readDataset } from '../verify/dataset.js';
import { LutraError } from '../util/errors.js';
import { loadModel, makeBackend } from '../runtime/load.js';
import { F32_NUMERICS, numericsName, parseNumerics } from '../fp16/numerics.js';
import { parseLoraSpec } from '../adapters/lora.js';

export const convertCommand: Command = {
  name: 'convert',
  summary: 'convert and quantize a model into a lutra package (meta.yaml + safetensors shards)',
  usage: 'lutra convert --model SRC --out DIR [--force] [--quant PART=FORMAT ...] [--lora DIR[:W] ...] [--lut1 B[,G]] [--lut2 B[,G]] [--lut3 B[,G]] [--fp16-scale auto|α [--calibration FILE]] [--numerics SPEC] [--tokenizer DIR]',
  options: {
    model: { type: 'string', short: 'm', arg: 'SRC', help: 'source: a Hugging Face checkpoint folder, a lutra package or a .gguf file (gemma3 or gemma4)', default: 'models/demo' },
    tokenizer: { type: 'string', arg: 'DIR', help: "copy the tokenizer files from DIR instead of the source's (a GGUF's tokenizer is rebuilt from its tokenizer.ggml.* metadata)" },
    out: { type: 'string', arg: 'DIR', help: 'output package folder (must not exist unless --force; written under a temporary name, then renamed)' },
    force: { type: 'boolean', help: 'replace an existing --out, once the new package is complete' },
    quant: { type: 'string', multiple: true, arg: 'PART=FORMAT', help: 'PART: embed ple attn ffn experts router lmhead all (all = every part but router); FORMAT: f32 f16 bf16 int8:G int4:G int8:e int4:e lut<b>:G (repeatable)' },
    lut1: { type: 'string', arg: 'B[,G]', help: 'seed shorthand: embeddings → lut<B>:G (G default 8, 0 = per tensor)' },
    lut2: { type: 'string', arg: 'B[,G]', help: 'seed shorthand: every attention and FFN matrix → lut<B>:G' },
    lut3: { type: 'string', arg: 'B[,G]', help: 'seed shorthand: LM head → lut<B>:G' },
    'fp16-scale': { type: 'string', arg: 'auto|α', help: 'scale the residual stream by α for fp16 accelerators; auto = lutra audit-fp16 on a calibration prompt', default: '1 (none)' },
    calibration: { type: 'string', arg: 'FILE', help: `prompts (JSONL or lines) the fp16 audit of --fp16-scale auto runs on, each with ${CALIBRATION_STEPS} greedy steps`, default: 'one built-in prompt' },
    numerics: { type: 'string', arg: 'SPEC', help: 'numerics the package is built for, recorded in meta.yaml and used by default when it runs (f32, fp16, fp16,accumulate=fp16, fp16,clamp)', default: 'fp16 with --fp16-scale, else f32' },
    lora: { type: 'string', multiple: true, arg: 'DIR[:W]', help: 'merge a LoRA adapter (PEFT folder) into the weights before quantizing: W + w·(alpha/r)·B·A in f32 (repeat to blend several); an adapted matrix with no --quant keeps its source format' },
    'weight-threshold': { type: 'string', arg: 'N', help: 'tensors with fewer elements stay unquantized', default: '0' },
  },
  notes:
    'int8:G / int4:G: symmetric, one scale per G input columns (c = per output channel, t = per tensor).\n' +
    'int8:e / int4:e: one scale per expert of a stacked tensor (per tensor otherwise), stored as :c.\n' +
    'lut<b>:G: a 2^b-entry table per G output channels (0 = one table per tensor), found by 1-D k-means.\n' +
    'Norms and other 1-D tensors are never quantized. With tied embeddings, a head format different from\n' +
    "the embedding's is stored as a separate lm_head.weight. See docs/FORMAT.md.",
  async run(flags) {
    const src = flags.model();
    const out = flags.string('out');
    const plan = buildPlan({
      quant: flags.strings('quant'),
      lut1: flags.optionalString('lut1'),
      lut2: flags.optionalString('lut2'),
      lut3: flags.optionalString('lut3'),
      weightThreshold: flags.number('weight-threshold', 0, { integer: true, min: 0 }),
    });
    const lora = flags.strings('lora').map((v) => parseLoraSpec(v));
    if (lora.length > 0 && flags.optionalString('fp16-scale') === 'auto') {
      throw new LutraError('--lora with --fp16-scale auto: the fp16 audit runs the model without the adapter; merge first (convert --lora), then convert that with --fp16-scale auto');
    }
    const numerics = numericsName(parseNumerics(flags.string('numerics', flags.has('fp16-scale') ? 'fp16' : 'f32')));
    if (flags.has('calibration') && flags.optionalString('fp16-scale') !== 'auto') throw new LutraError('--calibration needs --fp16-scale auto');
    // The fp16 audit runs the model first: check the source and the plan before it.
    if (flags.optionalString('fp16-scale') === 'auto') checkConvertPlan(src, plan);
    else if (lora.length > 0) checkConvertPlan(src, plan, lora); // a bad adapter fails before any hashing or writing
    const fp16Scale = chooseFp16Scale(flags.string('fp16-scale', '1'), src, flags.optionalString('calibration'));
    const t0 = performance.now();
    let bar: ReturnType<typeof tensorProgress> | null = null;
    const command = ['lutra', ...process.argv.slice(2)].map((a) => (/^[\w./:=,@+-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
    const meta = await convert({
      src,
      out,
      force: flags.bool('force'),
      plan,
      command,
      tokenizer: flags.optionalString('tokenizer'),
      fp16Scale,
      numerics,
      lora,
      onTensor: (name, i, total) => {
        bar ??= tensorProgress('convert', total);
        bar.update(i, name);
      },
    }).finally(() => (bar as ReturnType<typeof tensorProgress> | null)?.stop());
    if (!existsSync(join(out, 'tokenizer.json'))) {
      process.stderr.write(`warning: ${out} has no tokenizer (the source has no tokenizer.json, nor GGUF tokenizer metadata); generate and chat need one: convert again with --tokenizer DIR\n`);
    }
    const q = Object.entries(meta.quantization).filter(([k, v]) => k.startsWith('quant_') && v !== 'none').map(([k, v]) => `${k.slice(6)}=${v}`);
    process.stderr.write(
      `wrote ${out}: ${meta.tensors.length} tensors, ${(meta.total_bytes / 2 ** 20).toFixed(1)} MiB of weights` +
        ` (${q.length ? q.join(', ') : 'no quantization'}) in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`,
    );
  },
};

/** α from the flag: a number, or `auto` = the audit's recommendation on a calibration prompt. */
function chooseFp16Scale(value: string, src: string, calibration: string | undefined): { alpha: number; chosenBy: string } {
  if (value !== 'auto') {
    const alpha = checkAlpha(Number(value), `--fp16-scale ${value}`);
    return { alpha, chosenBy: alpha === 1 ? 'none' : 'given on the command line' };
  }
  const backend = makeBackend('wasm');
  try {
    const { model, tokenizer } = loadModel(src, backend, { numerics: F32_NUMERICS });
    const texts = calibration ? readDataset(calibration).map((p) => p.prompt) : [CALIBRATION_PROMPT];
    const prompts = texts.map((t) => (tokenizer!.hasChatTemplate ? tokenizer!.encodeChat([{ role: 'user', content: t }]) : tokenizer!.encode(t)));
    const r = auditFp16(model, prompts, { generate: CALIBRATION_STEPS });
    process.stderr.write(`fp16 audit: peak residual ${r.residualPeak.toExponential(3)} over ${r.positions} positions → α = ${r.alpha}\n`);
    const on = calibration ? `${prompts.length} prompts of ${calibration}` : 'the built-in calibration prompt';
    return { alpha: r.alpha, chosenBy: `auto: ${ALPHA_TARGET} / peak residual ${r.residualPeak.toExponential(4)} over ${r.positions} positions (${on}, ${CALIBRATION_STEPS} greedy steps each), rounded down to 1/64` };
  } finally {
    backend.dispose?.();
  }
}
