// Causal (optionally sliding-window) attention for units (t, kv head) with u0 ≤ t·numKvHeads + kvh < u1:
// every query head that shares the kv head (grouped-query attention) in one unit; in a decode step
// (split > 1) a unit takes 1/split of the keys and attentionCombine merges the parts.
// Keys of positions ≥ pos0 come from this batch's k/v; older ones from the cache (ring slot
// p % capacity). Each query is scored against exactly the keys it can see, so Q-chunking (which
// only changes the masked-out set) does not change the result.
//
// Per unit: the visible keys' addresses are listed once; scores four keys at a time (each query
// vector load serves four keys, each key row every head of the group); exp four lanes at a time;
// then per head the weighted sum of values, four value rows streamed at a time.
import { dot, axpy, hmax } from './dot';

export function attention(
  q: usize, k: usize, v: usize, cacheK: usize, cacheV: usize, capacity: i32, ring: i32,
  pos0: i32, numHeads: i32, numKvHeads: i32, headDim: i32, scale: f32, window: i32,
  out: usize, u0: i32, u1: i32, scratch: usize, split: i32, partials: usize,
): void {
  const kvDim = numKvHeads * headDim;
  const group = numHeads / numKvHeads;
  for (let u = u0; u < u1; u++) {
    // split > 1 (decode, fewer (token, kv head) pairs than threads): the visible keys are cut in
    // `split` runs, one per unit, each read by one thread; attentionCombine merges the partial
    // results (their maxima, sums and unnormalised outputs, in `partials`).
    const pair = u / split, part = u % split;
    const t = pair / numKvHeads, kvh = pair % numKvHeads;
    const kvOff = <usize>(kvh * headDim) << 2;
    const qp = pos0 + t;
    const lo = window > 0 ? max(0, qp - window + 1) : 0;
    const visible = qp - lo + 1;
    const j0 = lo + <i32>((<i64>visible * part) / split), j1 = lo + <i32>((<i64>visible * (part + 1)) / split);
    const n = j1 - j0;
    // scratch: n key addresses, n value addresses, then n scores per query head of the group.
    const keys = scratch, vals = keys + (<usize>n << 2), scores = vals + (<usize>n << 2);
    for (let j = 0; j < n; j++) {
      const p = j0 + j;
      const row = rowOffset(p, pos0, capacity, ring, kvDim) + kvOff;
      store<u32>(keys + (<usize>j << 2), <u32>((p >= pos0 ? k : cacheK) + row));
      store<u32>(vals + (<usize>j << 2), <u32>((p >= pos0 ? v : cacheV) + row));
    }
    const q0 = q + ((<usize>t * <usize>numHeads + <usize>(kvh * group)) * <usize>headDim << 2);
    const qs = <usize>headDim << 2, ss = <usize>n << 2;
    // Four keys at a time for every head of the group: the four rows stay in L1 across the heads.
    const vs = f32x4.splat(scale);
    let j = 0;
    for (; j + 4 <= n; j += 4) {
      const a = keys + (<usize>j << 2);
      const k0 = load<u32>(a), k1 = load<u32>(a, 4), k2 = load<u32>(a, 8), k3 = load<u32>(a, 12);
      for (let g = 0; g < group; g++) {
        v128.store(scores + <usize>g * ss + (<usize>j << 2), f32x4.mul(dot4(q0 + <usize>g * qs, k0, k1, k2, k3, headDim), vs));
      }
    }
    for (; j < n; j++) {
      const kr = <usize>load<u32>(keys + (<usize>j << 2));
      for (let g = 0; g < group; g++) store<f32>(scores + <usize>g * ss + (<usize>j << 2), dot(q0 + <usize>g * qs, kr, headDim) * scale);
    }
    for (let g = 0; g < group; g++) {
      const sg = scores + <usize>g * ss;
      if (split == 1) {
        const sum = softmaxWeights(sg, n, scores + <usize>group * ss); // the max goes to a spare slot
        weightedSum(vals, sg, n, headDim, <f32>(1 / sum), out + (q0 - q) + <usize>g * qs);
      } else {
        // Partial slot (pair, head g, part): max, sum, then headDim unnormalised outputs.
        const slot = partials + ((<usize>(pair * group + g) * <usize>split + <usize>part) * <usize>(headDim + 2) << 2);
        const sum = softmaxWeights(sg, n, slot);
        store<f32>(slot, <f32>sum, 4);
        weightedSum(vals, sg, n, headDim, 1, slot + 8);
      }
    }
  }
}

/**
 * Merge attention's key-split partial results: for each (pair, head), out = Σ_p e^(m_p − m)·o_p /
 * Σ_p e^(m_p − m)·l_p with m the largest m_p (the usual log-sum-exp merge). Runs on one thread.
 */
export function attentionCombine(partials: usize, pairs: i32, group: i32, split: i32, headDim: i32, out: usize): void {
  const ps = <usize>(headDim + 2) << 2;
  for (let h = 0; h < pairs * group; h++) {
    const base = partials + <usize>h * <usize>split * ps;
    let m: f32 = -Infinity;
    for (let p = 0; p < split; p++) m = max(m, load<f32>(base + <usize>p * ps));
    let l: f64 = 0;
    const o = out + (<usize>h * <usize>headDim << 2);
    memory.fill(o, 0, <usize>headDim << 2);
    for (let p = 0; p < split; p++) {
      const slot = base + <usize>p * ps;
      const mp = load<f32>(slot);
      if (mp == -Infinity) continue; // an empty run of keys
      const c = f32x4.extract_lane(exp4(f32x4.splat(mp - m)), 0);
      l += <f64>c * <f64>load<f32>(slot, 4);
      axpy(c, slot + 8, o, headDim);
    }
    const inv = <f32>(1 / l);
    for (let d = 0; d < headDim; d++) store<f32>(o + (<usize>d << 2), load<f32>(o + (<usize>d << 2)) * inv);
  }
}

/** Scores s[0..n) → e^(s − max) in place; stores the max at `maxAt`, returns their sum. */
function softmaxWeights(s: usize, n: i32, maxAt: usize): f64 {
  let mx4 = f32x4.splat(-Infinity);
  let j = 0;
  for (; j + 4 <= n; j += 4) mx4 = f32x4.max(mx4, v128.load(s + (<usize>j << 2)));
  let mx = hmax(mx4);
  for (; j < n; j++) mx = max(mx, load<f32>(s + (<usize>j << 2)));
  store<f32>(maxAt, mx);
  const vmx = f32x4.splat(mx);
  let sum4 = f32x4.splat(0);
  j = 0;
  for (; j + 4 <= n; j += 4) {
    const e = exp4(f32x4.sub(v128.load(s + (<usize>j << 2)), vmx));
    v128.store(s + (<usize>j << 2), e);
    sum4 = f32x4.add(sum4, e);
  }
  let sum = <f64>f32x4.extract_lane(sum4, 0) + <f64>f32x4.extract_lane(sum4, 1) + <f64>f32x4.extract_lane(sum4, 2) + <f64>f32x4.extract_lane(sum4, 3);
  for (; j < n; j++) {
    const e = f32x4.extract_lane(exp4(f32x4.splat(load<f32>(s + (<usize>j << 2)) - mx)), 0);
    store<f32>(s + (<usize>j << 2), e);
    sum += e;
  }
  return sum;
}

/** Byte offset of the key/value row of absolute position p in its array (batch or cache). */
@inline function rowOffset(p: i32, pos0: i32, capacity: i32, ring: i32, kvDim: i32): usize {
  const r = p >= pos0 ? p - pos0 : ring != 0 ? p % capacity : p;
  return (<usize>r * <usize>kvDim) << 2;
}

/** [q·k0, q·k1, q·k2, q·k3] over n f32. */
@inline function dot4(q: usize, k0: usize, k1: usize, k2: usize, k3: usize, n: i32): v128 {
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    const x = v128.load(q + o);
    a0 = f32x4.add(a0, f32x4.mul(x, v128.load(k0 + o)));
    a1 = f32x4.add(a1, f32x4.mul(x, v128.load(k1 + o)));
    a2 = f32x4.add(a2, f32x4.mul(x, v128.load(k2 + o)));
    a3 = f32x4.add(a3, f32x4.mul(x, v128.load(k3 + o)));
  }
  // Lane sums: two rounds of interleave-and-add.
  const ab = f32x4.add(v128.shuffle<f32>(a0, a1, 0, 4, 1, 5), v128.shuffle<f32>(a0, a1, 2, 6, 3, 7));
  const cd = f32x4.add(v128.shuffle<f32>(a2, a3, 0, 4, 1, 5), v128.shuffle<f32>(a2, a3, 2, 6, 3, 7));
  let s = f32x4.add(v128.shuffle<f64>(ab, cd, 0, 2), v128.shuffle<f64>(ab, cd, 1, 3));
  for (; i < n; i++) {
    const o = <usize>i << 2;
    const x = load<f32>(q + o);
    s = f32x4.add(s, f32x4(x * load<f32>(k0 + o), x * load<f32>(k1 + o), x * load<f32>(k2 + o), x * load<f32>(k3 + o)));
  }
  return s;
}

/**
 * out[d] = inv · Σ_j w[j]·V_j[d]. Keys four at a time, each pass running along the four value
 * rows from start to end (sequential streams the prefetchers follow; the rows come from DRAM in a
 * decode step) with the output row as the accumulator (it stays in L1).
 */
function weightedSum(vals: usize, w: usize, n: i32, dim: i32, inv: f32, out: usize): void {
  memory.fill(out, 0, <usize>dim << 2);
  const d4 = dim & ~3;
  let j = 0;
  for (; j + 4 <= n; j += 4) {
    const a = vals + (<usize>j << 2), wp = w + (<usize>j << 2);
    const r0 = <usize>load<u32>(a), r1 = <usize>load<u32>(a, 4), r2 = <usize>load<u32>(a, 8), r3 = <usize>load<u32>(a, 12);
    const e0 = v128.load32_splat(wp), e1 = v128.load32_splat(wp, 4), e2 = v128.load32_splat(wp, 8), e3 = v128.load32_splat(wp, 12);
    for (let d = 0; d < d4; d += 4) {
      const o = <usize>d << 2;
      let acc = f32x4.add(v128.load(out + o), f32x4.mul(e0, v128.load(r0 + o)));
      acc = f32x4.add(acc, f32x4.mul(e1, v128.load(r1 + o)));
      acc = f32x4.add(acc, f32x4.mul(e2, v128.load(r2 + o)));
      v128.store(out + o, f32x4.add(acc, f32x4.mul(e3, v128.load(r3 + o))));
    }
    for (let d = d4; d < dim; d++) {
      const o = <usize>d << 2;
      store<f32>(out + o, load<f32>(out + o) + load<f32>(wp) * load<f32>(r0 + o) + load<f32>(wp, 4) * load<f32>(r1 + o) + load<f32>(wp, 8) * load<f32>(r2 + o) + load<f32>(wp, 12) * load<f32>(r3 + o));
    }
  }
  for (; j < n; j++) axpy(load<f32>(w + (<usize>j << 2)), <usize>load<u32>(vals + (<usize>j << 2)), out, dim);
  const vi = f32x4.splat(inv);
  for (let d = 0; d < d4; d += 4) v128.store(out + (<usize>d << 2), f32x4.mul(v128.load(out + (<usize>d << 2)), vi));
  for (let d = d4; d < dim; d++) store<f32>(out + (<usize>d << 2), load<f32>(out + (<usize>d << 2)) * inv);
}

/**
 * e^x for four lanes with x ≤ 0 (scores minus their max): e^r·2^n with |r| ≤ ln2/2, Taylor to r⁷
 * (relative error < 1e-8 before the f32 rounding); below −87 (where e^x nears the smallest normal
 * f32) the result is e^−87 ≈ 1.6e-38 instead of something smaller, which no sum notices.
 */
@inline function exp4(x: v128): v128 {
  const z = f32x4.max(x, f32x4.splat(-87));
  const n = f32x4.nearest(f32x4.mul(z, f32x4.splat(1.4426950408889634)));
  // ln 2 in two parts (Cephes' split): n·C1 is exact, so r keeps its low bits.
  const r = f32x4.add(f32x4.sub(z, f32x4.mul(n, f32x4.splat(0.693359375))), f32x4.mul(n, f32x4.splat(2.12194440e-4)));
  let p = f32x4.splat(1.0 / 5040);
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.0 / 720));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.0 / 120));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.0 / 24));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.0 / 6));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(0.5));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1));
  return f32x4.mul(p, i32x4.shl(i32x4.add(i32x4.trunc_sat_f32x4_s(n), i32x4.splat(127)), 23));
}
