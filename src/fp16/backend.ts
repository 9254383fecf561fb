// fp16 numerics as a Backend wrapper: any backend's ops, with weights held at fp16 precision and
// every op's output rounded to fp16 (overflow → ±inf, as the hardware does). The model file does
// not change; detection and naming of the first overflow is the session's job (overflow.ts),
// through the observer points that follow every op.
import type { AttentionArgs, Backend, MatmulJob, Matrix, RopeTable } from '../backend/backend.js';
import type { WeightTensor } from '../model/weight.js';
import { formatTraits, rowBytes } from '../model/formats.js';
import { rowDecoder } from '../backend/reference/index.js';
import { f32ToF16Bits } from '../util/half.js';
import { FP16_MAX, roundToF16 } from './round.js';
import { attentionF16, geluMulF16, matmulF16, rmsNormF16 } from './fp16-ops.js';
import type { Numerics } from './numerics.js';

/**
 * A weight with its values (or scales, or table) at fp16 precision. bf16 weights stay bf16: a
 * bf16 value rounded to fp16 keeps at most bf16's 8 significant bits (fp16 only drops low bits, in
 * its subnormal range) or becomes ±inf, so the rounded value is exactly a bf16 value, and the
 * bf16 kernels (about twice as fast as the f16 ones) still apply.
 */
export function weightAtF16(w: WeightTensor): WeightTensor {
  const aux = formatTraits(w.format).aux?.name;
  if (aux) {
    const values = w[aux];
    if (!values) return w;
    const c = values.slice();
    roundToF16(c);
    return { ...w, [aux]: c };
  }
  const kind = w.format.kind;
  if (kind === 'f16') return w;
  const n = w.data.byteLength / rowBytes(w.format, 1);
  const values = new Float32Array(n);
  rowDecoder({ ...w, shape: [1, n] })(0, values);
  const bits = new Uint16Array(n);
  if (kind === 'bf16') {
    roundToF16(values);
    const u = new Uint32Array(values.buffer);
    for (let i = 0; i < n; i++) bits[i] = u[i] >>> 16; // exact: the low 16 bits are zero
    return { ...w, data: new Uint8Array(bits.buffer) };
  }
  for (let i = 0; i < n; i++) bits[i] = f32ToF16Bits(values[i]);
  return { ...w, format: { kind: 'f16' }, data: new Uint8Array(bits.buffer) };
}

export class Fp16Backend implements Backend {
  readonly name: string;
  private readonly acc16: boolean;
  /** Weight rows as f32 for the fp16-accumulation matmul (that mode only). */
  private readonly decoders = new WeakMap<Matrix, (r: number, dst: Float32Array) => void>();
  private readonly gains = new WeakMap<Float32Array, Float32Array>();
  /** Set when an fp16 norm statistic overflowed since the last takeStatOverflow(). */
  private statOverflow = false;
  private sawNonFinite = false;

  /** The inner backend's rounding when it has one (wasm: SIMD), else the plain-TS one. */
  private readonly round: (x: Float32Array, n: number) => number;

  constructor(readonly inner: Backend, readonly numerics: Numerics) {
    const round = inner.roundToF16 ? inner.roundToF16.bind(inner) : roundToF16;
    this.round = (x, n) => {
      const i = round(x, n);
      if (i >= 0) this.sawNonFinite = true;
      return i;
    };
    this.acc16 = numerics.accumulate === 'fp16';
    this.name = `${inner.name}, fp16${this.acc16 ? ' accumulate' : ''}${numerics.clampResidual ? ' clamp' : ''}`;
  }

  alloc(n: number): Float32Array {
    return this.inner.alloc(n);
  }

  free(a: Float32Array): void {
    this.inner.free?.(a);
  }
  scratch(n: number): Float32Array {
    return this.inner.scratch(n);
  }
  resetScratch(): void {
    this.inner.resetScratch();
  }

  prepare(w: WeightTensor): Matrix {
    const half = weightAtF16(w);
    const m = this.inner.prepare(half);
    if (this.acc16) this.decoders.set(m, rowDecoder(half));
    return m;
  }

  vector(w: WeightTensor): Float32Array {
    const v = this.inner.vector(w);
    roundToF16(v);
    return v;
  }

  /** True when an op output held a non-finite value since the last call: the watch scans only then. */
  takeNonFinite(): boolean {
    const s = this.sawNonFinite;
    this.sawNonFinite = false;
    return s;
  }

  /** True once per overflowed fp16 norm statistic (read by the overflow watch). */
  takeStatOverflow(): boolean {
    const s = this.statOverflow;
    this.statOverflow = false;
    return s;
  }

  matmuls(jobs: readonly MatmulJob[]): void {
    for (const j of jobs) this.matmul(j.x, j.T, j.w, j.out);
  }

  matmul(x: Float32Array, T: number, w: Matrix, out: Float32Array): void {
    if (this.acc16) matmulF16(x, T, w.rows, w.cols, this.decoders.get(w)!, out);
    else this.inner.matmul(x, T, w, out);
    this.round(out, T * w.rows);
  }

  embed(table: Matrix, ids: ArrayLike<number>, scale: number, out: Float32Array): void {
    this.inner.embed(table, ids, scale, out);
    this.round(out, ids.length * table.cols);
  }

  rmsNorm(x: Float32Array, rows: number, dim: number, gain: Float32Array, eps: number, out: Float32Array): void {
    // The model computes gains as 1 + w in f32; the accelerator would hold them in fp16.
    let g = this.gains.get(gain);
    if (!g) {
      g = this.inner.alloc(gain.length);
      g.set(gain);
      roundToF16(g);
      this.gains.set(gain, g);
    }
    if (this.acc16) {
      if (!rmsNormF16(x, rows, dim, g, eps, out)) this.statOverflow = true;
    } else {
      this.inner.rmsNorm(x, rows, dim, g, eps, out);
    }
    this.round(out, rows * dim);
  }

  rope(x: Float32Array, T: number, heads: number, headDim: number, pos0: number, table: RopeTable): void {
    this.inner.rope(x, T, heads, headDim, pos0, table);
    this.round(x, T * heads * headDim);
  }

  attention(a: AttentionArgs): void {
    if (this.acc16) attentionF16(a);
    else this.inner.attention(a);
    this.round(a.out, a.T * a.numHeads * a.headDim);
  }

  geluMul(gate: Float32Array, up: Float32Array, n: number, out: Float32Array): void {
    if (this.acc16) geluMulF16(gate, up, n, out);
    else this.inner.geluMul(gate, up, n, out);
    this.round(out, n);
  }

  add(acc: Float32Array, x: Float32Array, n: number): void {
    this.inner.add(acc, x, n);
    if (this.numerics.clampResidual) {
      for (let i = 0; i < n; i++) acc[i] = Math.min(FP16_MAX, Math.max(-FP16_MAX, acc[i]));
    }
    this.round(acc, n);
  }

  addProduct(acc: Float32Array, x: Float32Array, T: number, k: number, w: Float32Array, n: number): void {
    this.inner.addProduct(acc, x, T, k, w, n);
    this.round(acc, T * n);
  }

  scale(x: Float32Array, n: number, s: number): void {
    this.inner.scale(x, n, s);
    this.round(x, n);
  }

  dispose(): void {
    this.inner.dispose?.();
  }
}
