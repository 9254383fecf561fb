// Per-layer KV cache, laid out as the architecture says (CacheLayerSpec): a ring of W slots for
// sliding layers (a query sees at most W keys, its own included), the full history for global
// layers, and no storage at all for layers that read another layer's cache (Gemma 4's KV sharing:
// their entry is the source layer's cache object).
//
// Slots hold f32 or, with type 'f16', IEEE halves (half the bytes a long context reads per token):
// written rounded to nearest even and clamped to ±65 504, the largest finite half, so a value past
// the half range is kept at its edge rather than turned into an infinity that poisons every later
// softmax. The attention kernels widen halves back to f32 exactly.
import { kvTypes, type Backend, type KvType, type LayerCache } from '../backend/backend.js';
import { f32ToF16Bits } from '../util/half.js';
import { roundToF16 } from '../fp16/round.js';
import type { CacheLayerSpec } from '../model/forward.js';
import { LutraError } from '../util/errors.js';

/** Slots one layer's cache holds. */
function capacityOf(spec: CacheLayerSpec, contextLength: number, rollbackSlack: number): { capacity: number; ring: boolean } {
  const ringSlots = spec.window + rollbackSlack;
  const ring = spec.window > 0 && ringSlots < contextLength;
  return { capacity: ring ? ringSlots : contextLength, ring };
}

export class KVCache {
  /** Per layer; a layer that shares another's K/V holds the very same object as its source. */
  readonly layers: LayerCache[];
  /** Tokens stored so far (= position of the next token). */
  length = 0;
  private readonly kvDims: number[];

  /**
   * `rollbackSlack` extra ring slots let truncate() step back that many tokens (chat edits,
   * rejected speculative drafts); with 0 a ring holds exactly W slots.
   */
  constructor(backend: Backend, layout: readonly CacheLayerSpec[], readonly contextLength: number, readonly rollbackSlack = 0, readonly type: KvType = 'f32') {
    if (!kvTypes.includes(type)) throw new LutraError(`KV cache type '${type}': expected one of ${kvTypes.join(', ')}`);
    this.kvDims = layout.map((s) => s.kvDim);
    const elements = (values: number) => (type === 'f16' ? Math.ceil(values / 2) : values);
    this.layers = [];
    layout.forEach((spec, l) => {
      if (spec.source !== l) {
        if (!(spec.source < l)) throw new Error(`KV cache layout: layer ${l} reads layer ${spec.source}, which is not an earlier layer`);
        this.layers.push(this.layers[spec.source]);
        return;
      }
      const { capacity, ring } = capacityOf(spec, contextLength, rollbackSlack);
      const n = elements(capacity * spec.kvDim);
      this.layers.push({ k: backend.alloc(n), v: backend.alloc(n), capacity, ring, type });
    });
  }

  /** Bytes the keys and values of a cache with these settings take. */
  static bytesFor(layout: readonly CacheLayerSpec[], contextLength: number, rollbackSlack = 0, type: KvType = 'f32'): number {
    let values = 0;
    layout.forEach((spec, l) => {
      if (spec.source === l) values += capacityOf(spec, contextLength, rollbackSlack).capacity * spec.kvDim;
    });
    return values * 2 * (type === 'f16' ? 2 : 4);
  }

  /** Store keys/values of positions pos0..pos0+T-1 (for a ring, only the last `capacity` of them matter). */
  write(layer: number, k: Float32Array, v: Float32Array, pos0: number, T: number): void {
    const c = this.layers[layer];
    const d = this.kvDims[layer];
    if (!c.ring && pos0 + T > c.capacity) {
      throw new LutraError(`context full: ${pos0 + T} tokens exceed the context length ${c.capacity}`);
    }
    const first = c.ring ? Math.max(0, T - c.capacity) : 0;
    if (this.type === 'f16') {
      // Views made per call: a wasm memory that grew may have moved the arrays' buffer.
      const kh = new Uint16Array(c.k.buffer, c.k.byteOffset, c.capacity * d);
      const vh = new Uint16Array(c.v.buffer, c.v.byteOffset, c.capacity * d);
      const kb = new Uint32Array(k.buffer, k.byteOffset, T * d);
      const vb = new Uint32Array(v.buffer, v.byteOffset, T * d);
      for (let t = first; t < T; t++) {
        const slot = c.ring ? (pos0 + t) % c.capacity : pos0 + t;
        for (let i = 0; i < d; i++) {
          kh[slot * d + i] = halfOf(kb[t * d + i]);
          vh[slot * d + i] = halfOf(vb[t * d + i]);
        }
      }
      return;
    }
    for (let t = first; t < T; t++) {
      const slot = c.ring ? (pos0 + t) % c.capacity : pos0 + t;
      c.k.set(k.subarray(t * d, (t + 1) * d), slot * d);
      c.v.set(v.subarray(t * d, (t + 1) * d), slot * d);
    }
  }

  /**
   * With an f16 cache: round this pass's own keys or values (in place) to the halves the cache will
   * hold, so that a query sees every key at one precision whether an earlier pass cached it or it
   * comes from this pass, as in llama.cpp, which writes its cache before attending. Without it a
   * conversation continued from a cached prefix and the same tokens prefilled afresh differ by
   * more than summation order (a greedy answer forked at a near-tie on a random fixture).
   */
  matchPrecision(x: Float32Array, backend: Backend): void {
    if (this.type !== 'f16') return;
    const bad = backend.roundToF16 ? backend.roundToF16(x, x.length) : roundToF16(x, x.length);
    if (bad < 0) return;
    for (let i = bad; i < x.length; i++) if (x[i] === Infinity || x[i] === -Infinity) x[i] = Math.sign(x[i]) * 65504; // as write() clamps
  }

  reset(): void {
    this.length = 0;
  }

  /** Give the cache's memory back to the backend; the cache must not be used after. */
  dispose(backend: Backend): void {
    if (backend.free) for (const c of new Set(this.layers)) {
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

const f32Of = new Float32Array(1);
const bitsOf = new Uint32Array(f32Of.buffer);

/**
 * The f32 with bits u as the nearest half (ties to even), clamped to ±65 504 (the largest finite
 * half); NaN stays NaN. Halves' normal range straight from the bits, the rest (subnormals, zero,
 * overflow, NaN) through the general conversion.
 */
function halfOf(u: number): number {
  const exp = (u >>> 23) & 0xff;
  const sign = (u >>> 16) & 0x8000;
  if (exp >= 113 && exp <= 142) {
    const mant = u & 0x7fffff;
    let h = ((exp - 112) << 10) | (mant >>> 13);
    const rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && (h & 1) !== 0)) h++;
    return sign | (h > 0x7bff ? 0x7bff : h); // rounding past 65 504 clamps
  }
  if (exp > 142 && exp < 255) return sign | 0x7bff;
  if (exp === 255 && (u & 0x7fffff) === 0) return sign | 0x7bff; // ±Infinity
  bitsOf[0] = u;
  return f32ToF16Bits(f32Of[0]);
}
