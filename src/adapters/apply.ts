// LoRA applied unmerged at run time: y = x·Wᵀ + Σᵢ wᵢ·sᵢ·(x·Aᵢᵀ)·Bᵢᵀ on any base format. The
// adapters blended on one session are stacked once into a single pair per target (stackLora; B
// kept transposed), so any number of adapters costs one small f32 matmul (x·Aᵀ) and one
// addProduct (+= low·Bᵀ) per adapted matrix. The base weights are never touched: one loaded model
// serves sessions with different adapters, or none.
import type { Backend, Matrix } from '../backend/backend.js';
import type { Segment } from '../model/forward.js';
// Types only from lora.ts: a value import would close the cycle registry → model → apply → lora →
// checkpoint → registry and break module initialisation.
import type { LoraUse } from './lora.js';
import { LutraError } from '../util/errors.js';

/**
 * The adapters of a blend on one target stacked into one low-rank pair: A [R, in] (each adapter's
 * rows one above the other) and B [out, R] (side by side, weight·scale folded in), R = Σ ranks;
 * B·A is the blend's change. null when no adapter of the blend touches the target.
 */
export function stackLora(uses: readonly LoraUse[], target: string): { rank: number; inFeatures: number; outFeatures: number; A: Float32Array; B: Float64Array } | null {
  const mods = uses.flatMap((u) => {
    const m = u.adapter.modules.get(target);
    return m && u.weight !== 0 ? [{ m, s: u.weight * m.scale }] : [];
  });
  if (mods.length === 0) return null;
  const { inFeatures: I, outFeatures: O } = mods[0].m;
  const R = mods.reduce((n, x) => n + x.m.rank, 0);
  const A = new Float32Array(R * I);
  const B = new Float64Array(O * R);
  let k0 = 0;
  for (const { m, s } of mods) {
    A.set(m.A, k0 * I);
    for (let o = 0; o < O; o++) for (let k = 0; k < m.rank; k++) B[o * R + k0 + k] = s * m.B[o * m.rank + k];
    k0 += m.rank;
  }
  return { rank: R, inFeatures: I, outFeatures: O, A, B };
}

interface Pair {
  A: Matrix;
  /** Bᵀ [rank, out] with the blend's weights and scales folded in, in backend memory. */
  BT: Float32Array;
  rank: number;
  out: number;
}

export class PreparedLora {
  private readonly pairs = new Map<string, Pair>();
  /** The widest rank of any pair: the scratch a pass needs. */
  readonly maxRank: number;

  /** `uses` blended (weights folded in); each adapter must have been read against this model. */
  constructor(readonly backend: Backend, readonly uses: readonly LoraUse[]) {
    if (uses.length === 0) throw new LutraError('a LoRA blend needs at least one adapter');
    const targets = new Set<string>();
    for (const u of uses) for (const t of u.adapter.modules.keys()) targets.add(t);
    let maxRank = 0;
    for (const target of targets) {
      const st = stackLora(uses, target);
      if (!st) continue;
      const { rank: R, inFeatures: I, outFeatures: O } = st;
      const BT = backend.alloc(R * O);
      for (let o = 0; o < O; o++) for (let k = 0; k < R; k++) BT[k * O + o] = st.B[o * R + k];
      const prepared = backend.prepare({ name: `${target}.lora_A`, shape: [R, I], format: { kind: 'f32' }, data: new Uint8Array(st.A.buffer), source: 'LoRA' });
      this.pairs.set(target, { A: prepared, BT, rank: R, out: O });
      maxRank = Math.max(maxRank, R);
    }
    this.maxRank = maxRank;
  }

  /** Short names and weights, e.g. "style:0.7+other:0.3". */
  get label(): string {
    return this.uses.map((u) => (u.weight === 1 ? u.adapter.name : `${u.adapter.name}:${u.weight}`)).join('+');
  }

  pair(target: string): Pair | undefined {
    return this.pairs.get(target);
  }
}

/**
 * The adapters of one forward pass: each segment's own blend (or none). `apply` adds the delta of
 * one adapted matrix to its output rows, over all rows at once when the segments share a blend.
 */
export class LoraPass {
  private readonly shared: PreparedLora | null | undefined;
  private readonly rows: number;
  private low: Float32Array | null = null;

  private constructor(
    private readonly B: Backend,
    private readonly segments: readonly Segment[],
    private readonly rowOf: readonly number[],
  ) {
    this.rows = segments.reduce((n, s) => n + s.ids.length, 0);
    const first = segments[0].lora ?? null;
    this.shared = segments.every((s) => (s.lora ?? null) === first) ? first : undefined;
  }

  /** null when no segment has adapters (the pass is the plain model's). */
  static of(B: Backend, segments: readonly Segment[], rowOf: readonly number[]): LoraPass | null {
    return segments.some((s) => s.lora) ? new LoraPass(B, segments, rowOf) : null;
  }

  /** out[T, outCols] += delta(target) applied to x[T, inCols], per segment's blend. */
  apply(target: string, x: Float32Array, inCols: number, out: Float32Array, outCols: number): void {
    if (this.shared !== undefined) {
      if (this.shared) this.run(this.shared, target, x, this.rows, out, outCols);
      return;
    }
    this.segments.forEach((s, i) => {
      if (!s.lora) return;
      const r0 = this.rowOf[i];
      const n = s.ids.length;
      this.run(s.lora, target, x.subarray(r0 * inCols, (r0 + n) * inCols), n, out.subarray(r0 * outCols, (r0 + n) * outCols), outCols);
    });
  }

  private run(lora: PreparedLora, target: string, x: Float32Array, T: number, out: Float32Array, outCols: number): void {
    const p = lora.pair(target);
    if (!p) return;
    if (p.out !== outCols) throw new Error(`LoRA ${target}: output width ${p.out}, the pass has ${outCols}`);
    // Scratch is taken once per pass, at the widest blend any segment needs.
    this.low ??= this.B.scratch(this.rows * Math.max(...this.segments.map((s) => s.lora?.maxRank ?? 0)));
    const low = this.low.subarray(0, T * p.rank);
    this.B.matmul(x, T, p.A, low);
    this.B.addProduct(out, low, T, p.rank, p.BT, p.out);
  }
}
