// The reference backend: plain TypeScript, f64 accumulation, written to be read beside
// the Hugging Face Gemma 3 math. It is the oracle for every faster path. Weights stay in their stored
// format; each row is decoded to f32 as it is used and reused across the batch.
import { keyValueRows, type AttentionArgs, type Backend, type Matrix, type MatmulJob, type RopeTable } from '../backend.js';
import { matrixShape, type WeightTensor } from '../../model/weight.js';
import { auxLayout, formatName, formatTraits, intBlock, rowBytes, rowDecode, unitOf, type FormatOf, type IntFormat } from '../../model/formats.js';
import { LutraError } from '../../util/errors.js';
import { checkActivations, lutQ8Tables, quantizeQ8, usesQ8, type Activations } from './q8.js';

interface RefMatrix extends Matrix {
  /** Decode row r into dst (length cols) as f32. */
  decodeRow(r: number, dst: Float32Array): void;
  /** int8/int4/lut with q8 activations: integer codes of row r, and the scale of row r at column i. */
  q8?: { codes(r: number, dst: Int32Array): void; scale(r: number, i: number): number };
}

export interface ReferenceBackendOptions {
  /** 'q8': int8/int4/LUT matmuls quantize activations per block of 32 like the wasm kernels (default; LUT tables rounded to 7- or 8-bit integers). */
  activations?: Activations;
}

/** Integer codes and scales of an int8/int4 weight (the q8 matmul's view of it). */
function intView(w: WeightTensor): NonNullable<RefMatrix['q8']> {
  const f = w.format as IntFormat; // usesQ8
  const [rows, cols] = w.shape;
  const scales = auxOf(w);
  const aux = auxLayout(f, rows, cols)!;
  const block = intBlock(f, cols);
  const stride = rowBytes(f, cols);
  const buf = w.data.buffer, off = w.data.byteOffset;
  const i8 = new Int8Array(buf, off, w.data.byteLength);
  const u8 = new Uint8Array(buf, off, w.data.byteLength);
  return {
    codes:
      f.kind === 'int8'
        ? (r, dst) => {
            for (let i = 0; i < cols; i++) dst[i] = i8[r * stride + i];
          }
        : (r, dst) => {
            for (let i = 0; i < cols; i++) {
              const byte = u8[r * stride + (i >> 1)];
              dst[i] = ((i & 1) === 0 ? byte & 15 : byte >> 4) - 8;
            }
          },
    scale: (r, i) => scales[unitOf(aux, r) * aux.values + Math.floor(i / block)],
  };
}

/**
 * A LUT weight under q8 activations (lutQ8Tables): row r's codes looked up in its rounded table,
 * one scale per table; rows decode to the rounded values.
 */
function lutView(w: WeightTensor): { q8: NonNullable<RefMatrix['q8']>; decodeRow: RefMatrix['decodeRow'] } {
  const [rows, cols] = w.shape;
  const aux = auxLayout(w.format, rows, cols)!;
  const t = lutQ8Tables(auxOf(w), (w.format as FormatOf<'lut'>).bits);
  // A row's codes themselves: its decoder over an identity table.
  const identity = Float32Array.from({ length: aux.values }, (_, k) => k);
  const decode = rowDecode(w.format, cols);
  const stride = rowBytes(w.format, cols);
  const codes = new Float32Array(cols);
  return {
    q8: {
      codes: (r, dst) => {
        decode(w.data, r * stride, identity, 0, codes);
        const base = unitOf(aux, r) * aux.values;
        for (let i = 0; i < cols; i++) dst[i] = t.codes[base + codes[i]];
      },
      scale: (r) => t.scales[unitOf(aux, r)],
    },
    decodeRow: rowDecoder({ ...w, table: t.rounded }),
  };
}

/** The scales or table of a quantized weight; a LutraError naming the tensor when it has none. */
function auxOf(w: WeightTensor): Float32Array {
  const name = formatTraits(w.format).aux!.name;
  const v = w[name];
  if (!v) throw new LutraError(`${w.source}: tensor "${w.name}" (${formatName(w.format)}) has no ${name}`);
  return v;
}

const NO_AUX = new Float32Array(0);

/** A function that decodes row r of any weight format into f32 (the oracle's dequantizer). */
export function rowDecoder(w: WeightTensor): (r: number, dst: Float32Array) => void {
  const [rows, cols] = w.shape;
  const decode = rowDecode(w.format, cols);
  const stride = rowBytes(w.format, cols);
  const data = w.data;
  const aux = auxLayout(w.format, rows, cols);
  if (!aux) return (r, dst) => decode(data, r * stride, NO_AUX, 0, dst);
  const values = auxOf(w);
  return (r, dst) => decode(data, r * stride, values, unitOf(aux, r) * aux.values, dst);
}

/** A whole weight as f32 (conversion and diagnostics only; the runtime never expands weights). */
export function dequantize(w: WeightTensor): Float32Array {
  const [rows, cols] = matrixShape(w.shape);
  const decode = rowDecoder({ ...w, shape: [rows, cols] });
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) decode(r, out.subarray(r * cols, (r + 1) * cols));
  return out;
}

export class ReferenceBackend implements Backend {
  readonly name = 'reference';
  readonly activations: Activations;

  constructor(opts: ReferenceBackendOptions = {}) {
    this.activations = checkActivations(opts.activations);
  }

  alloc(n: number): Float32Array {
    return new Float32Array(n);
  }

  scratch(n: number): Float32Array {
    return new Float32Array(n);
  }

  resetScratch(): void {}

  prepare(w: WeightTensor): Matrix {
    if (w.shape.length !== 2) throw new LutraError(`${w.source}: tensor "${w.name}" should be 2-D, has shape [${w.shape}]`);
    const m: RefMatrix = { name: w.name, rows: w.shape[0], cols: w.shape[1], decodeRow: rowDecoder(w) };
    if (this.activations === 'q8' && usesQ8(w.format)) {
      if (w.format.kind === 'lut') Object.assign(m, lutView(w));
      else m.q8 = intView(w);
    }
    return m;
  }

  vector(w: WeightTensor): Float32Array {
    if (w.shape.length !== 1) throw new LutraError(`${w.source}: tensor "${w.name}" should be 1-D, has shape [${w.shape}]`);
    const out = new Float32Array(w.shape[0]);
    rowDecoder({ ...w, shape: [1, w.shape[0]] })(0, out);
    return out;
  }

  matmuls(jobs: readonly MatmulJob[]): void {
    for (const j of jobs) this.matmul(j.x, j.T, j.w, j.out);
  }

  matmul(x: Float32Array, T: number, w: Matrix, out: Float32Array): void {
    const m = w as RefMatrix;
    const { rows, cols } = m;
    if (m.q8) return matmulQ8(x, T, m, m.q8, out);
    const row = new Float32Array(cols);
    for (let r = 0; r < rows; r++) {
      m.decodeRow(r, row);
      for (let t = 0; t < T; t++) {
        const xo = t * cols;
        let acc = 0;
        for (let i = 0; i < cols; i++) acc += x[xo + i] * row[i];
        out[t * rows + r] = acc;
      }
    }
  }

  embed(table: Matrix, ids: ArrayLike<number>, scale: number, out: Float32Array): void {
    const m = table as RefMatrix;
    const row = new Float32Array(m.cols);
    for (let t = 0; t < ids.length; t++) {
      const id = ids[t];
      if (!Number.isInteger(id) || id < 0 || id >= m.rows) throw new LutraError(`token id ${id} is outside the embedding table (0..${m.rows - 1})`);
      m.decodeRow(id, row);
      for (let i = 0; i < m.cols; i++) out[t * m.cols + i] = row[i] * scale;
    }
  }

  rmsNorm(x: Float32Array, rows: number, dim: number, gain: Float32Array, eps: number, out: Float32Array): void {
    for (let r = 0; r < rows; r++) {
      const o = r * dim;
      let ss = 0;
      for (let i = 0; i < dim; i++) ss += x[o + i] * x[o + i];
      const inv = 1 / Math.sqrt(ss / dim + eps);
      for (let i = 0; i < dim; i++) out[o + i] = x[o + i] * inv * gain[i];
    }
  }

  rope(x: Float32Array, T: number, heads: number, headDim: number, pos0: number, table: RopeTable): void {
    const half = headDim / 2;
    const cos = new Float64Array(half);
    const sin = new Float64Array(half);
    for (let t = 0; t < T; t++) {
      const p = pos0 + t;
      for (let j = 0; j < half; j++) {
        const angle = Math.fround(p * table.invFreq[j]); // HF: float32 angle, then cos/sin
        cos[j] = Math.fround(Math.cos(angle));
        sin[j] = Math.fround(Math.sin(angle));
      }
      for (let h = 0; h < heads; h++) {
        const o = (t * heads + h) * headDim;
        for (let j = 0; j < half; j++) {
          const a = x[o + j];
          const b = x[o + j + half];
          x[o + j] = a * cos[j] - b * sin[j];
          x[o + j + half] = b * cos[j] + a * sin[j];
        }
      }
    }
  }

  attention(a: AttentionArgs): void {
    const { q, pos0, T, numHeads, numKvHeads, headDim, scale, window, out } = a;
    const group = numHeads / numKvHeads;
    const qChunk = Math.max(1, a.qChunk);
    const keyAt = keyValueRows(a);

    for (let c0 = 0; c0 < T; c0 += qChunk) {
      const c1 = Math.min(T, c0 + qChunk);
      // One chunk of queries against the union of the keys any of them can see.
      const lo = window > 0 ? Math.max(0, pos0 + c0 - window + 1) : 0;
      const hi = pos0 + c1 - 1;
      const nk = hi - lo + 1;
      const scores = new Float64Array((c1 - c0) * nk);
      for (let h = 0; h < numHeads; h++) {
        const kvh = Math.floor(h / group);
        for (let t = c0; t < c1; t++) {
          const qp = pos0 + t;
          const qo = (t * numHeads + h) * headDim;
          const srow = (t - c0) * nk;
          let max = -Infinity;
          for (let kp = lo; kp <= hi; kp++) {
            const visible = kp <= qp && (window === 0 || qp - kp < window);
            if (!visible) {
              scores[srow + kp - lo] = -Infinity;
              continue;
            }
            const [K, , base] = keyAt(kp);
            const ko = base + kvh * headDim;
            let dot = 0;
            for (let d = 0; d < headDim; d++) dot += q[qo + d] * K[ko + d];
            const s = dot * scale;
            scores[srow + kp - lo] = s;
            if (s > max) max = s;
          }
          let sum = 0;
          for (let j = 0; j < nk; j++) {
            const e = scores[srow + j] === -Infinity ? 0 : Math.exp(scores[srow + j] - max);
            scores[srow + j] = e;
            sum += e;
          }
          const acc = new Float64Array(headDim);
          for (let kp = lo; kp <= hi; kp++) {
            const p = scores[srow + kp - lo];
            if (p === 0) continue;
            const [, V, base] = keyAt(kp);
            const vo = base + kvh * headDim;
            for (let d = 0; d < headDim; d++) acc[d] += p * V[vo + d];
          }
          for (let d = 0; d < headDim; d++) out[qo + d] = acc[d] / sum;
        }
      }
    }
  }

  geluMul(gate: Float32Array, up: Float32Array, n: number, out: Float32Array): void {
    const c = Math.sqrt(2 / Math.PI);
    for (let i = 0; i < n; i++) {
      const x = gate[i];
      const g = 0.5 * x * (1 + Math.tanh(c * (x + 0.044715 * x * x * x)));
      out[i] = g * up[i];
    }
  }

  add(acc: Float32Array, x: Float32Array, n: number): void {
    for (let i = 0; i < n; i++) acc[i] += x[i];
  }

  addProduct(acc: Float32Array, x: Float32Array, T: number, k: number, w: Float32Array, n: number): void {
    for (let t = 0; t < T; t++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let i = 0; i < k; i++) s += x[t * k + i] * w[i * n + j];
        acc[t * n + j] += s;
      }
    }
  }

  scale(x: Float32Array, n: number, s: number): void {
    const f = Math.fround(s);
    for (let i = 0; i < n; i++) x[i] *= f;
  }
}

/**
 * out[t, r] = Σ_blocks scale(r, block) · d(t, block) · Σ code(r, i) · q(t, i), in f64: activations
 * quantized per block of 32 (q8.ts), integer dot products, one scaling per block.
 */
function matmulQ8(x: Float32Array, T: number, m: RefMatrix, v: NonNullable<RefMatrix['q8']>, out: Float32Array): void {
  const { rows, cols } = m;
  const nb = Math.ceil(cols / 32);
  const q = new Int32Array(T * cols);
  const d = new Float64Array(T * nb);
  for (let t = 0; t < T; t++) quantizeQ8(x, t * cols, cols, q.subarray(t * cols), d.subarray(t * nb));
  const codes = new Int32Array(cols);
  for (let r = 0; r < rows; r++) {
    v.codes(r, codes);
    for (let t = 0; t < T; t++) {
      let acc = 0;
      for (let b0 = 0; b0 < cols; b0 += 32) {
        const end = Math.min(cols, b0 + 32);
        let isum = 0;
        for (let i = b0; i < end; i++) isum += codes[i] * q[t * cols + i];
        acc += v.scale(r, b0) * d[t * nb + (b0 >> 5)] * isum;
      }
      out[t * rows + r] = acc;
    }
  }
}
