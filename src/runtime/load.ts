// Open a model folder: weights, config and tokenizer, on the chosen backend.
import { openWeightSource } from '../io/source.js';
import { architectureOf } from '../arch/registry.js';
import type { CausalLM } from '../model/forward.js';
import { GemmaTokenizer } from '../tokenizer/tokenizer.js';
import { loadGgufTokenizer } from '../tokenizer/gguf-tokenizer.js';
import { GgufSource } from '../io/gguf-source.js';
import type { Backend } from '../backend/backend.js';
import { ReferenceBackend } from '../backend/reference/index.js';
import { WasmBackend } from '../backend/wasm/index.js';
import type { SimdLevel } from '../backend/wasm/kernels.js';
import { LutraError } from '../util/errors.js';
import { Fp16Backend } from '../fp16/backend.js';
import { F32_NUMERICS, parseNumerics, type Numerics } from '../fp16/numerics.js';
import type { TensorSpec } from '../arch/architecture.js';
import { readLoraAdapter } from '../adapters/lora.js';
import { PreparedLora } from '../adapters/apply.js';

export interface LoadedModel {
  model: CausalLM;
  tokenizer: GemmaTokenizer;
  dir: string;
  loadSeconds: number;
}

/** activations: 'q8' (default) or 'f32' inputs to int8/int4/LUT matmuls (both backends agree on it); simd: the wasm kernels build. */
export function makeBackend(name: string, opts: { threads?: number; activations?: 'q8' | 'f32'; simd?: SimdLevel; spin?: number; repack?: boolean } = {}): Backend {
  if (name === 'reference') return new ReferenceBackend({ activations: opts.activations });
  if (name === 'wasm') return new WasmBackend({ threads: opts.threads, activations: opts.activations, simd: opts.simd, spin: opts.spin, repack: opts.repack });
  throw new LutraError(`--backend ${name}: unknown; available: wasm, reference`);
}

/**
 * Load a model on `backend`. Numerics: as given, else what a package records in meta.yaml, else
 * f32; fp16 wraps the backend so every op's output is rounded to fp16. The tokenizer comes from
 * `tokenizerDir` when given, else from the model folder's tokenizer.json, or for a .gguf file
 * from its tokenizer.ggml.* metadata. `onOpened` runs once the source is open and its headers
 * are checked, before the weights are read (a CLI's loading line). Tensor shapes are checked
 * against the config first; `checkWeights: false` skips the NaN/Inf scan of every weight.
 */
export function loadModel(
  dir: string,
  backend: Backend,
  opts: {
    tokenizer?: boolean;
    numerics?: Numerics;
    tokenizerDir?: string;
    onOpened?: () => void;
    checkWeights?: boolean;
    /** LoRA adapters (PEFT folders) to blend, read and checked against the model before its weights. */
    lora?: readonly { dir: string; weight: number }[];
  } = {},
): { model: CausalLM; tokenizer: GemmaTokenizer | null; loadSeconds: number; numerics: Numerics; tensors: TensorSpec[]; lora: PreparedLora | null } {
  const t0 = performance.now();
  const src = openWeightSource(dir);
  try {
    const numerics = opts.numerics ?? (src.numerics ? parseNumerics(src.numerics, `${dir}: meta.yaml numerics`) : F32_NUMERICS);
    const run = numerics.mode === 'fp16' ? new Fp16Backend(backend, numerics) : backend;
    const eos = src.config.eosTokenIds;
    const tokenizer =
      opts.tokenizer === false
        ? null
        : opts.tokenizerDir !== undefined
          ? GemmaTokenizer.load(opts.tokenizerDir, eos)
          : src instanceof GgufSource
            ? loadGgufTokenizer(src.file, eos, src.config.vocabSize)
            : GemmaTokenizer.load(dir, eos);
    // The tokenizer first: a model without one fails before its weights are read. The folder,
    // config, headers and tokenizer are checked: the slow part (reading weights) starts.
    const arch = architectureOf(src.config);
    const tensors = arch.tensors(src.config, src);
    const adapters = (opts.lora ?? []).map((l) => ({ adapter: readLoraAdapter(l.dir, tensors), weight: l.weight }));
    opts.onOpened?.();
    const model = arch.load(src.config, run, src, { weights: opts.checkWeights });
    const lora = adapters.length > 0 ? new PreparedLora(run, adapters) : null;
    return { model, tokenizer, loadSeconds: (performance.now() - t0) / 1000, numerics, tensors, lora };
  } finally {
    src.close();
  }
}
