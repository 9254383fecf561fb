// Per-layer KV cache: a ring of W slots for sliding layers (a query sees at most W keys, its own
// included) and the full history for global layers.
import type { Backend, LayerCache } from '../backend/backend.js';
import { isSliding, type GemmaConfig } from '../model/config.js';
import { LutraError } from '../util/errors.js';

export class KVCache {
  readonly layers: LayerCache[];
  /** Tokens stored so far (= position of the next token). */
  length = 0;
  private readonly kvDim: number;

  /**
   * `rollbackSlack` extra ring slots let truncate() step back that many tokens (chat edits,
   * rejected speculative drafts); with 0 a ring holds exactly W slots.
   */
  constructor(backend: Backend, cfg: GemmaConfig, readonly contextLength: number, readonly rollbackSlack = 0) {
    this.kvDim = cfg.numKvHeads * cfg.headDim;
    this.layers = cfg.layerTypes.map((_, l) => {
      const ringSlots = cfg.slidingWindow + rollbackSlack;
      const ring = isSliding(cfg, l) && ringSlots < contextLength;
      const capacity = ring ? ringSlots : contextLength;
      return { k: backend.alloc(capacity * this.kvDim), v: backend.alloc(capacity * this.kvDim), capacity, ring };
    });
  }

  /** Bytes the keys and values of a cache with these settings take (f32). */
  static bytesFor(cfg: GemmaConfig, contextLength: number, rollbackSlack = 0): number {
    let slots = 0;
    for (let l = 0; l < cfg.numLayers; l++) {
      const ringSlots = cfg.slidingWindow + rollbackSlack;
      slots += isSliding(cfg, l) && ringSlots < contextLength ? ringSlots : contextLength;
    }
    return slots * cfg.numKvHeads * cfg.headDim * 2 * 4;
  }

  /** Store keys/values of positions pos0..pos0+T-1 (for a ring, only the last `capacity` of them matter). */
  write(layer: number, k: Float32Array, v: Float32Array, pos0: number, T: number): void {
    const c = this.layers[layer];
    const d = this.kvDim;
    if (!c.ring && pos0 + T > c.capacity) {
      throw new LutraError(`context full: ${pos0 + T} tokens exceed the context length ${c.capacity}`);
    }
    const first = c.ring ? Math.max(0, T - c.capacity) : 0;
    for (let t = first; t < T; t++) {
      const slot = c.ring ? (pos0 + t) % c.capacity : pos0 + t;
      c.k.set(k.subarray(t * d, (t + 1) * d), slot * d);
      c.v.set(v.subarray(t * d, (t + 1) * d), slot * d);
    }
  }

  reset(): void {
    this.length = 0;
  }

  /** Give the cache's memory back to the backend; the cache must not be used after. */
  dispose(backend: Backend): void {
    if (backend.free) for (const c of this.layers) {
      backend.free(c.k);
      backend.free(c.v);
    }
    this.layers.length = 0;
    this.length = 0;
  }

  /** Largest number of tokens truncate() can drop from the end. */
  get maxRollback(): number {
    return this.rollbackSlack + 1;
  }

  /** Forget positions ≥ n. A ring still holds the W-1 keys position n needs only if few enough were dropped. */
  truncate(n: number): boolean {
    if (n >= this.length) return n === this.length;
    if (this.length - n > this.maxRollback && this.layers.some((c) => c.ring)) return false;
    this.length = n;
    return true;
  }
}
