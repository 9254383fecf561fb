import { test } from 'node:test';
import assert from 'node:assert/strict';
import { quantizeLinear } from '../src/quant/linear.js';
import { quantizeLut, closeLutWorkers } from '../src/quant/lut.js';
import { distinctPoints, kmeansApprox, kmeansExact, kmeansLloyd, clusteringCost } from '../src/quant/kmeans1d.js';
import { encodeQ8_0, encodeQ4_0, decodeQ8_0, decodeQ4_0 } from '../src/io/gguf.js';
import { dequantize } from '../src/backend/reference/index.js';
import { buildPlan, formatFor } from '../src/quant/plan.js';
import { parseFormat, type IntFormat } from '../src/model/formats.js';
import type { WeightFormat, WeightTensor } from '../src/model/weight.js';
import { f32ToF16Bits, f32ToBf16Bits, bf16BitsToF32 } from '../src/util/half.js';

function gaussian(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const u = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s + 0.5) / 2 ** 32;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
  return out;
}

function roundTrip(x: Float32Array, rows: number, cols: number, format: WeightFormat): Float32Array {
  const w: WeightTensor = { name: 't', shape: [rows, cols], format, data: new Uint8Array(0), source: 'test' };
  if (format.kind === 'lut') {
    const q = quantizeLut(x, rows, cols, format.bits, format.group, 't');
    Object.assign(w, { data: q.codes, table: q.table });
  } else {
    const q = quantizeLinear(x, rows, cols, format as IntFormat, 't');
    Object.assign(w, { data: q.codes, scales: q.scales });
  }
  return dequantize(w);
}

function relRms(x: Float32Array, y: Float32Array, from = 0, to = x.length): number {
  let e = 0;
  let s = 0;
  for (let i = from; i < to; i++) {
    e += (x[i] - y[i]) ** 2;
    s += x[i] ** 2;
  }
  return Math.sqrt(e / s);
}

// Awkward sizes: rows and cols not multiples of 4 or 8 where the format allows it.
const R = 12;
const C = 96;

test('int8 and int4 errors stay within their step bounds, per block, per channel and per tensor', () => {
  const x = gaussian(R * C, 1);
  for (const g of [32, 'c', 't'] as const) {
    for (const kind of ['int8', 'int4'] as const) {
      const y = roundTrip(x, R, C, { kind, group: g });
      const bs = typeof g === 'number' ? g : C;
      for (let r = 0; r < R; r++) {
        for (let b = 0; b < C; b += bs) {
          const lo = g === 't' ? 0 : r * C + b;
          const hi = g === 't' ? x.length : lo + bs;
          let amax = 0;
          for (let i = lo; i < hi; i++) amax = Math.max(amax, Math.abs(x[i]));
          // int8: step d = amax/127, error ≤ d/2 plus the f16 rounding of d over 127 steps.
          // int4 (Q4_0 rule): step d = amax/8; the extreme opposite the signed max clamps to 7d.
          const bound = kind === 'int8' ? (amax / 127) * (0.5 + 127 * 2 ** -11) : (amax / 8) * (1 + 8 * 2 ** -11);
          for (let i = r * C + b; i < r * C + b + bs; i++) assert.ok(Math.abs(x[i] - y[i]) <= bound + 1e-7, `${kind}:${g} element ${i}: |Δ| ${Math.abs(x[i] - y[i])} > ${bound}`);
        }
      }
    }
  }
});

test('per-channel int8 beats per-tensor on a matrix with one outlier row', () => {
  const x = gaussian(R * C, 2);
  for (let i = 0; i < C; i++) x[i] *= 200; // row 0 is an outlier channel
  const perTensor = relRms(x, roundTrip(x, R, C, { kind: 'int8', group: 't' }), C);
  const perChannel = relRms(x, roundTrip(x, R, C, { kind: 'int8', group: 'c' }), C);
  // Rows 1.. get a step 200× too coarse under one tensor scale.
  assert.ok(perTensor / perChannel > 50, `per-tensor ${perTensor}, per-channel ${perChannel}`);
});

test('lut errors on gaussian and outlier-heavy weights', () => {
  const x = gaussian(R * C, 3);
  // Lloyd–Max with 16 levels on a gaussian has relative RMS error 0.097; grouped tables do better.
  assert.ok(relRms(x, roundTrip(x, R, C, { kind: 'lut', bits: 4, group: 0 })) < 0.11);
  const grouped = relRms(x, roundTrip(x, R, C, { kind: 'lut', bits: 4, group: 4 }));
  assert.ok(grouped < 0.1, `lut4:4 ${grouped}`);
  assert.ok(relRms(x, roundTrip(x, R, C, { kind: 'lut', bits: 8, group: 4 })) < 0.01);
  // Outliers: one huge value per row. A per-tensor table wastes entries on them; per-4-rows less so.
  const o = gaussian(R * C, 4);
  for (let r = 0; r < R; r++) o[r * C + (r % C)] = 60;
  const t0 = relRms(o, roundTrip(o, R, C, { kind: 'lut', bits: 3, group: 0 }));
  const t4 = relRms(o, roundTrip(o, R, C, { kind: 'lut', bits: 3, group: 4 }));
  assert.ok(t0 < 0.35 && t4 < 0.35, `lut3 per-tensor ${t0}, lut3:4 ${t4}`);
  // Every lut bit width 1..8 round-trips through the bitstream.
  for (let b = 1; b <= 8; b++) {
    const err = relRms(x, roundTrip(x, R, 37, { kind: 'lut', bits: b, group: 3 }).subarray(0), 0, R * 37);
    assert.ok(err < 1.01 * 2 ** -(b - 1.5) + 0.02, `lut${b}: ${err}`);
  }
});

test('lut reproduces a group with ≤ 2^b distinct values exactly', () => {
  const rows = 6;
  const cols = 29;
  const x = new Float32Array(rows * cols);
  // Three tables (group 2), each with 8 distinct f16-representable values, for lut3.
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) x[r * cols + c] = ((c * 7 + r) % 8) * 0.125 - 0.5 + Math.floor(r / 2) * 3;
  const y = roundTrip(x, rows, cols, { kind: 'lut', bits: 3, group: 2 });
  assert.deepEqual(Array.from(y), Array.from(x));
});

test('exact 1-D k-means matches the brute-force optimum', () => {
  for (let trial = 0; trial < 40; trial++) {
    const n = 4 + (trial % 7);
    const xs = Array.from(gaussian(n, 100 + trial)).map((v) => Math.round(v * 8) / 8);
    const pts = distinctPoints(xs);
    const u = pts.values.length;
    for (let k = 2; k < Math.min(4, u); k++) {
      const exact = clusteringCost(pts, kmeansExact(pts, k));
      // Brute force: every way to cut the sorted distinct values into k contiguous runs.
      let best = Infinity;
      const cut = (start: number, left: number, acc: number) => {
        if (left === 1) {
          best = Math.min(best, acc + runCost(start, u));
          return;
        }
        for (let e = start + 1; e <= u - left + 1; e++) cut(e, left - 1, acc + runCost(start, e));
      };
      const runCost = (a: number, b: number) => {
        let w = 0, s = 0;
        for (let i = a; i < b; i++) (w += pts.weights[i]), (s += pts.weights[i] * pts.values[i]);
        const m = s / w;
        let c = 0;
        for (let i = a; i < b; i++) c += pts.weights[i] * (pts.values[i] - m) ** 2;
        return c;
      };
      cut(0, k, 0);
      assert.ok(Math.abs(exact - best) <= 1e-9 * Math.max(1, best), `n ${n} k ${k}: exact ${exact} vs brute ${best}`);
      assert.ok(clusteringCost(pts, kmeansLloyd(pts, k)) >= best - 1e-9);
    }
  }
});

test('the binned k-means used for large groups stays within 2% of the optimum', () => {
  const pts = distinctPoints(gaussian(2560, 7));
  for (const k of [16, 64]) {
    const exact = clusteringCost(pts, kmeansExact(pts, k));
    const approx = clusteringCost(pts, kmeansApprox(pts, k, Math.max(256, 8 * k)));
    assert.ok(approx <= exact * 1.02, `k ${k}: binned ${approx} vs exact ${exact}`);
    assert.ok(approx >= exact - 1e-9);
  }
});

test('binned k-means on bf16 weight groups (4 × 640) stays within 2% of the optimum', () => {
  // Real-looking groups: bf16-rounded gaussians at weight scale (≈ 1100 distinct values of 2560).
  for (let seed = 1; seed <= 4; seed++) {
    const x = gaussian(2560, 1000 + seed).map((v) => bf16BitsToF32(f32ToBf16Bits(v * 0.03)));
    const pts = distinctPoints(x);
    for (const k of [16, 64]) {
      const exact = clusteringCost(pts, kmeansExact(pts, k));
      const approx = clusteringCost(pts, kmeansApprox(pts, k, Math.max(256, 8 * k)));
      assert.ok(approx <= exact * 1.02, `seed ${seed} k ${k}: binned ${approx} vs exact ${exact} (${approx / exact})`);
      assert.ok(approx >= exact * (1 - 1e-12));
    }
  }
});

test('lut on worker threads is byte-identical to the single-threaded result', () => {
  const rows = 512;
  const cols = 640;
  const x = gaussian(rows * cols, 21).map((v) => bf16BitsToF32(f32ToBf16Bits(v * 0.02)));
  try {
    for (const [bits, group] of [[4, 4], [6, 4], [3, 8]]) {
      const serial = quantizeLut(x, rows, cols, bits, group, 't', { threads: 1 });
      for (const threads of [2, 3]) {
        const par = quantizeLut(x, rows, cols, bits, group, 't', { threads });
        assert.deepEqual(Buffer.from(par.codes), Buffer.from(serial.codes), `lut${bits}:${group} codes, ${threads} threads`);
        assert.deepEqual(Buffer.from(par.table.buffer), Buffer.from(serial.table.buffer), `lut${bits}:${group} tables, ${threads} threads`);
        assert.equal(par.exactGroups, serial.exactGroups);
      }
    }
  } finally {
    closeLutWorkers();
  }
});

test('int8:32 and int4:32 are value- and byte-identical to GGUF Q8_0 and Q4_0', () => {
  const rows = 5;
  const cols = 64;
  const x = gaussian(rows * cols, 9);
  x[3] = 0; // a tie and a zero for the rounding rules
  x[40] = -7.25;
  const q8 = quantizeLinear(x, rows, cols, { kind: 'int8', group: 32 }, 't');
  const g8 = encodeQ8_0(x);
  const q4 = quantizeLinear(x, rows, cols, { kind: 'int4', group: 32 }, 't');
  const g4 = encodeQ4_0(x);
  const blocks = (rows * cols) / 32;
  for (let b = 0; b < blocks; b++) {
    const dv = new DataView(g8.buffer, g8.byteOffset + b * 34, 34);
    assert.equal(dv.getUint16(0, true), f32ToF16Bits(q8.scales[b]), `Q8_0 block ${b} scale`);
    for (let j = 0; j < 32; j++) assert.equal(dv.getInt8(2 + j), new Int8Array(q8.codes.buffer)[b * 32 + j]);
    const d4 = new DataView(g4.buffer, g4.byteOffset + b * 18, 18);
    assert.equal(d4.getUint16(0, true), f32ToF16Bits(q4.scales[b]), `Q4_0 block ${b} scale`);
    for (let j = 0; j < 16; j++) {
      // Q4_0 puts element j in the low nibble and j+16 in the high nibble of byte j.
      const lo = q4.codes[(b * 32 + j) >> 1] >> (((b * 32 + j) & 1) * 4) & 15;
      const hi = q4.codes[(b * 32 + j + 16) >> 1] >> (((b * 32 + j + 16) & 1) * 4) & 15;
      assert.equal(d4.getUint8(2 + j), lo | (hi << 4), `Q4_0 block ${b} byte ${j}`);
    }
  }
  assert.deepEqual(Array.from(roundTrip(x, rows, cols, { kind: 'int8', group: 32 })), Array.from(decodeQ8_0(g8)));
  assert.deepEqual(Array.from(roundTrip(x, rows, cols, { kind: 'int4', group: 32 })), Array.from(decodeQ4_0(g4)));
});

test('formats and plans parse, and bad ones are named', () => {
  assert.deepEqual(parseFormat('lut6:4', 'x'), { kind: 'lut', bits: 6, group: 4 });
  assert.deepEqual(parseFormat('int8:c', 'x'), { kind: 'int8', group: 'c' });
  assert.throws(() => parseFormat('lut9:4', '--quant ffn=lut9:4'), /--quant ffn=lut9:4: unknown format "lut9:4"/);
  const plan = buildPlan({ quant: ['all=int8:32'], lut2: '4', lut3: '6,4', weightThreshold: 100 });
  assert.deepEqual(formatFor(plan, 'ffn', [64, 64]), { kind: 'lut', bits: 4, group: 8 });
  assert.deepEqual(formatFor(plan, 'embed', [64, 64]), { kind: 'int8', group: 32 });
  assert.equal(formatFor(plan, 'ffn', [8, 8]), null); // under the threshold
  assert.equal(formatFor(plan, null, [64]), null);
  assert.throws(() => buildPlan({ quant: ['mlp=int8:32'], weightThreshold: 0 }), /unknown part "mlp"/);
  assert.throws(() => quantizeLut(new Float32Array(30), 10, 3, 4, 4, 'model.layers.0.mlp.down_proj.weight'), /"model\.layers\.0\.mlp\.down_proj\.weight": 10 output channels are not divisible by the lut group size 4/);
  assert.throws(() => quantizeLinear(new Float32Array(30), 3, 10, { kind: 'int8', group: 32 }, 'w'), /10 input columns are not a multiple of the int8 block size 32/);
});
