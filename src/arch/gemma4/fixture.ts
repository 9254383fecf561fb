// Gemma 4 fixture configs: random-weight checkpoints in the real shapes (E2B, E4B, 31B, 26B-A4B)
// and two tiny ones: tiny-gemma4 exercises every feature the dense models have — per-layer
// embeddings, KV sharing, double-wide MLPs, K=V full layers, two head sizes, proportional RoPE,
// softcapping and layer scalars ≠ 1 — and tiny-gemma4-moe the mixture-of-experts layers (router,
// top-k experts beside the dense MLP, K=V full layers, no per-layer embeddings), laid out so
// llama.cpp computes exactly what the config says (its KV-sharing rule: the layer before the
// shared block is full, the one before that sliding).
import { LutraError } from '../../util/errors.js';

export interface Gemma4FixtureShape {
  hidden: number;
  intermediate: number;
  layers: number;
  /** Layer pattern: a full layer after every `period - 1` sliding ones. */
  period: number;
  heads: number;
  kvHeads: number;
  /** KV heads of full layers when K = V (else null: full layers use kvHeads and have a V projection). */
  globalKvHeads: number | null;
  headDim: number;
  globalHeadDim: number;
  slidingWindow: number;
  maxPositions: number;
  perLayerInput: number;
  kvSharedLayers: number;
  doubleWideMlp: boolean;
  /** Mixture of experts on every layer: expert count, experts per token, expert width; null = dense. */
  moe: { experts: number; topK: number; width: number } | null;
  embedStd: number;
}

export const GEMMA4_SHAPES: Record<string, Gemma4FixtureShape> = {
  'tiny-gemma4': {
    hidden: 64, intermediate: 96, layers: 10, period: 5, heads: 4, kvHeads: 2, globalKvHeads: 1, headDim: 16, globalHeadDim: 32,
    slidingWindow: 8, maxPositions: 2048, perLayerInput: 16, kvSharedLayers: 5, doubleWideMlp: true, moe: null, embedStd: 0.5,
  },
  'tiny-gemma4-moe': {
    hidden: 64, intermediate: 64, layers: 6, period: 3, heads: 4, kvHeads: 2, globalKvHeads: 1, headDim: 16, globalHeadDim: 32,
    slidingWindow: 16, maxPositions: 2048, perLayerInput: 0, kvSharedLayers: 0, doubleWideMlp: false, moe: { experts: 8, topK: 2, width: 32 }, embedStd: 0.5,
  },
  // 30 layers of 26B-A4B's kind at a fifth of its width (32 experts, top 4): deep enough for the
  // error compounding of a quantization study, small enough (1.1 GB bf16) to run beside its packages.
  'gemma-4-moe-study': {
    hidden: 512, intermediate: 512, layers: 30, period: 6, heads: 4, kvHeads: 2, globalKvHeads: 1, headDim: 64, globalHeadDim: 128,
    slidingWindow: 128, maxPositions: 8192, perLayerInput: 0, kvSharedLayers: 0, doubleWideMlp: false, moe: { experts: 32, topK: 4, width: 256 }, embedStd: 0.05,
  },
  'gemma-4-e2b': {
    hidden: 1536, intermediate: 6144, layers: 35, period: 5, heads: 8, kvHeads: 1, globalKvHeads: null, headDim: 256, globalHeadDim: 512,
    slidingWindow: 512, maxPositions: 131072, perLayerInput: 256, kvSharedLayers: 20, doubleWideMlp: true, moe: null, embedStd: 0.05,
  },
  'gemma-4-e4b': {
    hidden: 2560, intermediate: 10240, layers: 42, period: 6, heads: 8, kvHeads: 2, globalKvHeads: null, headDim: 256, globalHeadDim: 512,
    slidingWindow: 512, maxPositions: 131072, perLayerInput: 256, kvSharedLayers: 18, doubleWideMlp: false, moe: null, embedStd: 0.05,
  },
  'gemma-4-31b': {
    hidden: 5376, intermediate: 21504, layers: 60, period: 6, heads: 32, kvHeads: 16, globalKvHeads: 4, headDim: 256, globalHeadDim: 512,
    slidingWindow: 1024, maxPositions: 262144, perLayerInput: 0, kvSharedLayers: 0, doubleWideMlp: false, moe: null, embedStd: 0.05,
  },
  'gemma-4-26b-a4b': {
    hidden: 2816, intermediate: 2112, layers: 30, period: 6, heads: 16, kvHeads: 8, globalKvHeads: 2, headDim: 256, globalHeadDim: 512,
    slidingWindow: 1024, maxPositions: 262144, perLayerInput: 0, kvSharedLayers: 0, doubleWideMlp: false, moe: { experts: 128, topK: 8, width: 704 }, embedStd: 0.05,
  },
};

/**
 * The shape cut to its first `layers` layers (to fit a machine): the layer pattern is kept, and
 * KV sharing starts at the same fraction of the depth, moved to the nearest point where llama.cpp's
 * rule holds (or dropped when there is none).
 */
export function cutLayers(s: Gemma4FixtureShape, layers: number, name: string): Gemma4FixtureShape {
  if (!Number.isInteger(layers) || layers < 1 || layers > s.layers) throw new LutraError(`--layers ${layers}: expected an integer in [1, ${s.layers}] for ${name}`);
  if (layers === s.layers) return s;
  let shared = 0;
  if (s.kvSharedLayers > 0) {
    const full = (i: number) => (i + 1) % s.period === 0 || i === layers - 1;
    const want = Math.round((layers * (s.layers - s.kvSharedLayers)) / s.layers);
    let best = -1;
    for (let first = 2; first < layers; first++) {
      if (full(first - 1) && !full(first - 2) && (best < 0 || Math.abs(first - want) < Math.abs(best - want))) best = first;
    }
    shared = best < 0 ? 0 : layers - best;
  }
  return { ...s, layers, kvSharedLayers: shared };
}

/** config.json of a Gemma 4 fixture (model_type gemma4_text), every field written out. */
export function gemma4FixtureConfig(s: Gemma4FixtureShape): Record<string, unknown> {
  const layerTypes = Array.from({ length: s.layers }, (_, i) => ((i + 1) % s.period === 0 || i === s.layers - 1 ? 'full_attention' : 'sliding_attention'));
  return {
    architectures: ['Gemma4ForCausalLM'],
    model_type: 'gemma4_text',
    vocab_size: 262144,
    vocab_size_per_layer_input: 262144,
    hidden_size: s.hidden,
    hidden_size_per_layer_input: s.perLayerInput,
    intermediate_size: s.intermediate,
    num_hidden_layers: s.layers,
    num_attention_heads: s.heads,
    num_key_value_heads: s.kvHeads,
    num_global_key_value_heads: s.globalKvHeads,
    attention_k_eq_v: s.globalKvHeads !== null,
    head_dim: s.headDim,
    global_head_dim: s.globalHeadDim,
    sliding_window: s.slidingWindow,
    layer_types: layerTypes,
    num_kv_shared_layers: s.kvSharedLayers,
    use_double_wide_mlp: s.doubleWideMlp,
    max_position_embeddings: s.maxPositions,
    rms_norm_eps: 1e-6,
    rope_parameters: {
      sliding_attention: { rope_type: 'default', rope_theta: 10000 },
      full_attention: { rope_type: 'proportional', partial_rotary_factor: 0.25, rope_theta: 1000000 },
    },
    hidden_activation: 'gelu_pytorch_tanh',
    tie_word_embeddings: true,
    final_logit_softcapping: 30,
    enable_moe_block: s.moe !== null,
    ...(s.moe ? { num_experts: s.moe.experts, top_k_experts: s.moe.topK, moe_intermediate_size: s.moe.width } : {}),
    bos_token_id: 2,
    eos_token_id: [1, 106],
    pad_token_id: 0,
    torch_dtype: 'bfloat16',
  };
}
