// Small per-element ops, run on the calling thread. They follow the reference backend's f64
// arithmetic so their outputs match it (nearly always bit for bit); they are cheap next to matmul.
import { decodeRow } from './decode';
import { colsOf } from './matrix';

export function rmsNorm(x: usize, rows: i32, dim: i32, gain: usize, eps: f64, out: usize): void {
  for (let r = 0; r < rows; r++) {
    const o = <usize>r * <usize>dim << 2;
    let ss: f64 = 0;
    for (let i = 0; i < dim; i++) {
      const v = <f64>load<f32>(x + o + (<usize>i << 2));
      ss += v * v;
    }
    const inv = 1 / Math.sqrt(ss / <f64>dim + eps);
    for (let i = 0; i < dim; i++) {
      const p = o + (<usize>i << 2);
      store<f32>(out + p, <f32>(<f64>load<f32>(x + p) * inv * <f64>load<f32>(gain + (<usize>i << 2))));
    }
  }
}

/** Rotate-half RoPE in place; angles in f32 like HF. `trig` holds headDim f64 of scratch. */
export function rope(x: usize, T: i32, heads: i32, headDim: i32, pos0: i32, invFreq: usize, trig: usize): void {
  const half = headDim >> 1;
  const cos = trig, sin = trig + (<usize>half << 3);
  for (let t = 0; t < T; t++) {
    const p = <f64>(pos0 + t);
    for (let j = 0; j < half; j++) {
      const angle = <f64><f32>(p * <f64>load<f32>(invFreq + (<usize>j << 2)));
      store<f64>(cos + (<usize>j << 3), <f64><f32>Math.cos(angle));
      store<f64>(sin + (<usize>j << 3), <f64><f32>Math.sin(angle));
    }
    for (let h = 0; h < heads; h++) {
      const o = x + ((<usize>t * <usize>heads + <usize>h) * <usize>headDim << 2);
      for (let j = 0; j < half; j++) {
        const pa = o + (<usize>j << 2), pb = o + (<usize>(j + half) << 2);
        const a = <f64>load<f32>(pa), b = <f64>load<f32>(pb);
        const c = load<f64>(cos + (<usize>j << 3)), s = load<f64>(sin + (<usize>j << 3));
        store<f32>(pa, <f32>(a * c - b * s));
        store<f32>(pb, <f32>(b * c + a * s));
      }
    }
  }
}

/** out = gelu_tanh(gate) × up for elements i0..i1. */
export function geluMul(gate: usize, up: usize, i0: i32, i1: i32, out: usize): void {
  const c = Math.sqrt(2 / Math.PI);
  for (let i = i0; i < i1; i++) {
    const o = <usize>i << 2;
    const x = <f64>load<f32>(gate + o);
    const g = 0.5 * x * (1 + Math.tanh(c * (x + 0.044715 * x * x * x)));
    store<f32>(out + o, <f32>(g * <f64>load<f32>(up + o)));
  }
}

export function add(acc: usize, x: usize, n: i32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    v128.store(acc + o, f32x4.add(v128.load(acc + o), v128.load(x + o)));
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    store<f32>(acc + o, load<f32>(acc + o) + load<f32>(x + o));
  }
}

/** out = row `id` of the table × scale (one f32 rounding, as the reference). */
export function embedRow(d: usize, id: i32, scale: f32, out: usize): void {
  decodeRow(d, id, out);
  const cols = colsOf(d);
  const vs = f32x4.splat(scale);
  let i = 0;
  for (; i + 4 <= cols; i += 4) v128.store(out + (<usize>i << 2), f32x4.mul(v128.load(out + (<usize>i << 2)), vs));
  for (; i < cols; i++) store<f32>(out + (<usize>i << 2), load<f32>(out + (<usize>i << 2)) * scale);
}
