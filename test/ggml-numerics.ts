// llama.cpp's CPU numerics, emulated on lutra's reference backend for tests only. lutra computes
// what Hugging Face computes; llama.cpp's CPU backend rounds in three places lutra does not:
//  - GELU is a table of f16 results indexed by the f16-rounded input; inputs ≥ 10 pass through
//    unrounded (the f32 input itself), inputs ≤ −10 give 0 (the test is on the f32 input).
//  - Before a Q8_0 or Q4_0 matmul the activations are quantized to Q8_0 blocks of 32 (x86 rule):
//    amax in f32, d = f16(amax / 127), code = nearest-even(x · (127 / amax)) in f32.
//  - RMS norm: the sum of f32 squares in f64, mean and 1/sqrt(mean + eps) in f32, then x · scale
//    and · gain each rounded to f32.
// With all three, lutra's quantized packages agree with llama.cpp's Q8_0/Q4_0 export to ~1e-8 in
// KL (docs/EXPERIMENTS.md G8): what remains between the engines is these roundings, not weights.
import { ReferenceBackend } from '../src/backend/reference/index.js';
import type { Matrix } from '../src/backend/backend.js';
import type { WeightTensor } from '../src/model/weight.js';
import { f16BitsToF32, f32ToF16Bits } from '../src/util/half.js';

const h16 = (x: number) => f16BitsToF32(f32ToF16Bits(x));
const f = Math.fround;

/** llama.cpp's table GELU of one f32 input. */
export function ggmlGelu(x: number): number {
  if (x <= -10) return 0;
  if (x >= 10) return x;
  const v = h16(x);
  return h16(0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v * v * v))));
}

/** x (n values, n a multiple of 32) quantized to Q8_0 blocks as ggml's x86 path does, and dequantized. */
export function ggmlQ8Round(x: Float32Array, n: number): Float32Array {
  const y = new Float32Array(n);
  for (let b0 = 0; b0 < n; b0 += 32) {
    let amax = 0;
    for (let i = b0; i < b0 + 32; i++) amax = Math.max(amax, Math.abs(x[i]));
    const d = h16(f(amax / 127));
    const id = amax !== 0 ? f(127 / amax) : 0;
    for (let i = b0; i < b0 + 32; i++) {
      const v = f(x[i] * id);
      let r = Math.round(v);
      if (r - v === 0.5 && r % 2 !== 0) r--; // ties to even
      y[i] = r * d;
    }
  }
  return y;
}

export interface GgmlNumericsOptions {
  /** Q8_0 activation rounding before matmuls with int8:32 / int4:32 weights (default true). */
  q8?: boolean;
  /** The f16 GELU table (default true). */
  gelu?: boolean;
  /** RMS norm rounded as ggml rounds it (default true). */
  norm?: boolean;
}

/** The reference backend (f32 activations) with llama.cpp's CPU roundings switched on. */
export class GgmlNumericsBackend extends ReferenceBackend {
  private readonly blockQuantized = new WeakSet<Matrix>();
  private readonly o: Required<GgmlNumericsOptions>;

  constructor(opts: GgmlNumericsOptions = {}) {
    super({ activations: 'f32' });
    this.o = { q8: opts.q8 ?? true, gelu: opts.gelu ?? true, norm: opts.norm ?? true };
  }

  override prepare(w: WeightTensor): Matrix {
    const m = super.prepare(w);
    if ((w.format.kind === 'int8' || w.format.kind === 'int4') && w.format.group === 32) this.blockQuantized.add(m);
    return m;
  }

  override matmul(x: Float32Array, T: number, w: Matrix, out: Float32Array): void {
    const input = this.o.q8 && this.blockQuantized.has(w) ? ggmlQ8Round(x, T * w.cols) : x;
    super.matmul(input, T, w, out);
  }

  override rmsNorm(x: Float32Array, rows: number, dim: number, gain: Float32Array, eps: number, out: Float32Array): void {
    if (!this.o.norm) return super.rmsNorm(x, rows, dim, gain, eps, out);
    const e = f(eps);
    for (let r = 0; r < rows; r++) {
      const o = r * dim;
      let sum = 0;
      for (let i = 0; i < dim; i++) sum += f(x[o + i] * x[o + i]);
      const scale = f(1 / f(Math.sqrt(f(f(sum / dim) + e))));
      for (let i = 0; i < dim; i++) out[o + i] = f(f(x[o + i] * scale) * gain[i]);
    }
  }

  override geluMul(gate: Float32Array, up: Float32Array, n: number, out: Float32Array): void {
    if (!this.o.gelu) return super.geluMul(gate, up, n, out);
    for (let i = 0; i < n; i++) out[i] = ggmlGelu(gate[i]) * up[i];
  }
}
