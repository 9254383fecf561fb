// The Gemma 4 dense architecture (model_type gemma4_text, or gemma4 with a text_config).
import type { Architecture } from '../architecture.js';
import type { Gemma4Config } from '../config-types.js';
import { resolveGemma4Config, llamaCppKvSharingProblem } from './config.js';
import { gemma4Tensors, gemma4HfTensorName } from './tensors.js';
import { Gemma4Model, gemma4CacheLayout } from './model.js';
import { gemma4ConfigFromGguf, gemma4GgufMetadata, gemma4RopeFreqs } from './gguf.js';
import { f32ToBf16Bits } from '../../util/half.js';

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Where llama.cpp's gemma4 graph computes something other than this config's HF semantics. */
function differences(cfg: Gemma4Config): string[] {
  const out: string[] = [];
  f32[0] = Math.sqrt(cfg.hiddenSize);
  if (f32ToBf16Bits(f32[0]) << 16 !== (u32[0] | 0)) {
    out.push(`embedding scale: llama.cpp multiplies by sqrt(${cfg.hiddenSize}) exactly, HF bf16 models by it rounded to bf16`);
  }
  if (cfg.ropeLocal.linearFactor !== 1 || cfg.ropeGlobal.linearFactor !== 1) out.push('RoPE scaling: llama.cpp\'s gemma4 graph reads no RoPE scaling factor');
  return out;
}

export const gemma4: Architecture<Gemma4Config> = {
  name: 'gemma4',
  modelTypes: ['gemma4_text', 'gemma4'],
  resolveConfig: resolveGemma4Config,
  tensors: gemma4Tensors,
  cacheLayout: gemma4CacheLayout,
  // Plain gains on the three norms whose output is added to the stream. The per-layer input gate
  // reads the stream without a norm, so it divides α out (its GELU then sees the same values); the
  // per-layer projection of the embedding does too, so its per-slice norm (whose ε would otherwise
  // weigh α⁻² more on these small values) sees the same inputs. The layer scalar multiplies the
  // scaled stream as it is.
  fp16ScaleRule: (name) =>
    /\.(post_attention_layernorm|post_feedforward_layernorm|post_per_layer_input_norm)\.weight$/.test(name)
      ? 'gain'
      : name.endsWith('.per_layer_input_gate.weight') || name === 'model.per_layer_model_projection.weight'
        ? 'inverse'
        : null,
  load: (cfg, backend, src, checks) => new Gemma4Model(cfg, backend, src, checks),
  gguf: {
    arch: 'gemma4',
    hfName: gemma4HfTensorName,
    ignored: (name) => name === 'rope_freqs.weight',
    configFromGguf: gemma4ConfigFromGguf,
    normsStoredPlusOne: false,
    metadata: gemma4GgufMetadata,
    extraTensors: (cfg) => [{ gguf: 'rope_freqs.weight', data: gemma4RopeFreqs(cfg) }],
    differences,
    exportProblem: llamaCppKvSharingProblem,
  },
};
