// The resolved configs of the architectures lutra runs. Every architecture's config shares the
// fields the runtime needs (vocabulary, layers, context, special ids); the rest is its own.

export type LayerType = 'sliding_attention' | 'full_attention';

export interface RopeParams {
  theta: number;
  /** Linear scaling factor (positions divided by it); 1 when unscaled. */
  linearFactor: number;
  /**
   * Fraction of the head's rotation pairs that turn (Gemma 4's "proportional" RoPE): pair j < R
   * rotates with frequency theta^(-2j/headDim), pairs j ≥ R stay put, R = floor(fraction·headDim/2).
   * 1 = every pair (the default RoPE).
   */
  rotaryFraction: number;
}

/** What every architecture's config resolves. */
export interface BaseConfig {
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  slidingWindow: number;
  maxPositions: number;
  rmsNormEps: number;
  layerTypes: LayerType[];
  tieWordEmbeddings: boolean;
  finalLogitSoftcapping: number | null;
  bosTokenId: number;
  eosTokenIds: number[];
  padTokenId: number;
  hiddenActivation: string;
}

export interface Gemma3Config extends BaseConfig {
  modelType: 'gemma3_text';
  intermediateSize: number;
  numKvHeads: number;
  headDim: number;
  queryPreAttnScalar: number;
  ropeGlobal: RopeParams;
  ropeLocal: RopeParams;
}

/** One Gemma 4 layer's shape, derived from the config (see gemma4 config resolution). */
export interface Gemma4Layer {
  sliding: boolean;
  /** head_dim on sliding layers, global_head_dim on full ones. */
  headDim: number;
  /** num_key_value_heads, or num_global_key_value_heads on a full layer with attention_k_eq_v. */
  numKvHeads: number;
  /** Full layers with attention_k_eq_v have no v_proj: V is the raw K projection. */
  kEqV: boolean;
  /** The MLP width: intermediate_size, doubled on KV-shared layers with use_double_wide_mlp. */
  intermediateSize: number;
  /** The layer whose K/V cache this layer reads: itself, or an earlier layer when KV-shared. */
  kvSource: number;
}

export interface Gemma4Config extends BaseConfig {
  modelType: 'gemma4_text';
  intermediateSize: number;
  numKvHeads: number;
  headDim: number;
  globalHeadDim: number;
  numGlobalKvHeads: number | null;
  attentionKEqV: boolean;
  useDoubleWideMlp: boolean;
  /** Per-layer embedding width P (0: no per-layer embeddings). */
  hiddenSizePerLayerInput: number;
  vocabSizePerLayerInput: number;
  numKvSharedLayers: number;
  ropeLocal: RopeParams;
  ropeGlobal: RopeParams;
  enableMoeBlock: boolean;
  numExperts: number | null;
  topKExperts: number | null;
  moeIntermediateSize: number | null;
  /** Per layer, derived: head size, KV heads, K=V, MLP width, KV source. */
  layers: Gemma4Layer[];
}

export type ModelConfig = Gemma3Config | Gemma4Config;
