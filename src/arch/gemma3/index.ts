// The Gemma 3 architecture (model_type gemma3_text, or gemma3 with a text_config).
import type { Architecture } from '../architecture.js';
import type { Gemma3Config } from '../config-types.js';
import { resolveGemma3Config } from './config.js';
import { gemma3Tensors, gemma3HfTensorName } from './tensors.js';
import { Gemma3Model, gemma3CacheLayout } from './model.js';
import { gemma3ConfigFromGguf, gemma3GgufMetadata, gemma3LlamaCppDifferences } from './gguf.js';

export const gemma3: Architecture<Gemma3Config> = {
  name: 'gemma3',
  modelTypes: ['gemma3_text', 'gemma3'],
  resolveConfig: resolveGemma3Config,
  tensors: gemma3Tensors,
  cacheLayout: gemma3CacheLayout,
  // Norm gains stored as offsets from 1; the post-norms' outputs are added to the stream.
  fp16ScaleRule: (name) => (/\.(post_attention_layernorm|post_feedforward_layernorm)\.weight$/.test(name) ? 'offsetGain' : null),
  load: (cfg, backend, src, checks) => new Gemma3Model(cfg, backend, src, checks),
  gguf: {
    arch: 'gemma3',
    hfName: gemma3HfTensorName,
    configFromGguf: gemma3ConfigFromGguf,
    normsStoredPlusOne: true,
    metadata: gemma3GgufMetadata,
    differences: gemma3LlamaCppDifferences,
  },
};
