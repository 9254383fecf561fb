// Attention maps: for one prompt, every layer's and head's softmax(q·kᵀ·scale) over the positions it
// may see (the sliding window on local layers, all earlier positions on global ones), rebuilt in
// float64 from the queries and keys the forward pass computes (after q/k norm and RoPE), with the
// figures that describe each head: entropy, the mass on <bos> (the attention sink) and the mean
// distance attended to.
import type { CausalLM, Observer } from '../model/forward.js';
import { Session } from '../runtime/session.js';
import { LutraError } from '../util/errors.js';
import type { PreparedLora } from '../adapters/apply.js';

export interface HeadAttention {
  head: number;
  /** The KV head it reads (grouped-query attention). */
  kvHead: number;
  /** Mean over queries of the entropy of its attention row, nats. */
  entropy: number;
  /** Mean over queries of the probability on position 0 (<bos>). */
  sinkMass: number;
  /** Mean over queries of Σₖ p(k)·(q − k): how far back it looks, in positions. */
  meanDistance: number;
}

export interface LayerAttention {
  layer: number;
  /** Sliding-window (local) layer, or global. */
  sliding: boolean;
  /** Positions a query sees on a sliding layer (itself included), 0 on a global one. */
  window: number;
  heads: HeadAttention[];
  /** Per head, the [T, T] map: row q holds the probabilities over keys 0..T−1 (zero where masked). */
  maps: Float32Array[];
}

export interface AttentionReport {
  ids: number[];
  tokens: number;
  layers: LayerAttention[];
  /** Means over the heads of sliding and of global layers. */
  summary: { sliding: Omit<HeadAttention, 'head' | 'kvHead'> | null; global: Omit<HeadAttention, 'head' | 'kvHead'> | null };
}

/**
 * Run `ids` through `model` in one prefill pass and return every layer's attention maps. The queries
 * and keys are the ones the model attends with (observer points q_rope and k_rope; a layer that
 * shares another layer's cache uses that layer's keys).
 */
export function attentionMaps(model: CausalLM, ids: number[], lora: PreparedLora | null = null): AttentionReport {
  const T = ids.length;
  if (T < 2) throw new LutraError('attention: the prompt needs at least 2 tokens');
  if (T > model.cfg.maxPositions) throw new LutraError(`attention: ${T} tokens exceed max_position_embeddings ${model.cfg.maxPositions}`);
  const nH = model.cfg.numHeads;
  const q = new Map<number, Float32Array>();
  const k = new Map<number, Float32Array>();
  const watch: Observer = (layer, point, data) => {
    if (point === 'q_rope') q.set(layer, data.slice());
    else if (point === 'k_rope') k.set(layer, data.slice());
  };
  const s = new Session(model, { contextLength: T, prefillBatch: T, lora });
  try {
    s.prefill(ids, { observer: watch });
  } finally {
    s.dispose();
  }
  const layers: LayerAttention[] = [];
  for (let l = 0; l < model.numLayers; l++) {
    const spec = model.cacheLayout[l];
    const ql = q.get(l);
    const kl = k.get(spec.source);
    if (!ql || !kl) throw new Error(`attention: layer ${l} reported no queries or keys`);
    const D = ql.length / (T * nH);
    const nKV = kl.length / (T * D);
    const scale = model.attentionScale(l);
    const W = spec.window;
    const heads: HeadAttention[] = [];
    const maps: Float32Array[] = [];
    for (let h = 0; h < nH; h++) {
      const kvh = Math.floor(h / (nH / nKV));
      const map = new Float32Array(T * T);
      let entropy = 0;
      let sink = 0;
      let dist = 0;
      const row = new Float64Array(T);
      for (let t = 0; t < T; t++) {
        const k0 = W > 0 ? Math.max(0, t - W + 1) : 0;
        let max = -Infinity;
        for (let j = k0; j <= t; j++) {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += ql[(t * nH + h) * D + d] * kl[(j * nKV + kvh) * D + d];
          row[j] = dot * scale;
          if (row[j] > max) max = row[j];
        }
        let sum = 0;
        for (let j = k0; j <= t; j++) sum += row[j] = Math.exp(row[j] - max);
        for (let j = k0; j <= t; j++) {
          const p = row[j] / sum;
          map[t * T + j] = p;
          if (p > 0) entropy -= p * Math.log(p);
          dist += p * (t - j);
        }
        sink += map[t * T];
      }
      heads.push({ head: h, kvHead: kvh, entropy: entropy / T, sinkMass: sink / T, meanDistance: dist / T });
      maps.push(map);
    }
    layers.push({ layer: l, sliding: W > 0, window: W, heads, maps });
  }
  const mean = (sliding: boolean) => {
    const hs = layers.filter((x) => x.sliding === sliding).flatMap((x) => x.heads);
    if (hs.length === 0) return null;
    const avg = (f: (h: HeadAttention) => number) => hs.reduce((a, h) => a + f(h), 0) / hs.length;
    return { entropy: avg((h) => h.entropy), sinkMass: avg((h) => h.sinkMass), meanDistance: avg((h) => h.meanDistance) };
  };
  return { ids, tokens: T, layers, summary: { sliding: mean(true), global: mean(false) } };
}
