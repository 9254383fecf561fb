// Causal (optionally sliding-window) attention for units (t, kv head) with u0 ≤ t·numKvHeads + kvh < u1:
// every query head that shares the kv head (grouped-query attention) in one unit; in a decode step
// (split > 1) a unit takes 1/split of the keys and attentionCombine merges the parts.
// Keys of positions ≥ pos0 come from this batch's k/v; older ones from the cache (ring slot
// p % capacity). Each query is scored against exactly the keys it can see, so Q-chunking (which
// only changes the masked-out set) does not change the result.
//
// Per unit: the visible keys' addresses are listed once; then, a block of KB keys at a time, the
// scores of every head of the group (an even group in tiles of two heads × four keys); exp four
// lanes at a time; then the weighted sums of values, a block of KB value rows at a time added into
// every head's output (an even group in tiles of two heads × sixteen dims summed in registers), so
// K and V are each read once per unit. With kvHalf the cache holds IEEE halves (this batch's own
// k/v stay f32): each block of cached rows is widened to f32 once, in scratch, before use.
import { dot, axpy, hmax, madd } from './dot';
import { expf4 } from './expf';

/** Keys per block: a block's f32 key or value rows (16 KB at headDim 256) stay in L1 while they are used. */
const KB = 16;

export function attention(
  q: usize, k: usize, v: usize, cacheK: usize, cacheV: usize, capacity: i32, ring: i32,
  pos0: i32, numHeads: i32, numKvHeads: i32, headDim: i32, scale: f32, window: i32,
  out: usize, u0: i32, u1: i32, scratch: usize, split: i32, partials: usize, kvHalf: i32, T: i32, qBlock: i32,
): void {
  const kvDim = numKvHeads * headDim;
  const group = numHeads / numKvHeads;
  const rowBytes = <usize>headDim << 2;
  const qs = rowBytes, ts = <usize>numHeads * qs; // the next head's row, the next token's
  for (let u = u0; u < u1; u++) {
    // A unit: tokens t0..t0+nt-1 (a block of qBlock) × one kv head with every query head of its
    // group: R = nt·group query rows scored against the same keys, so each block of keys and
    // values is read once for all of them. split > 1 (decode, fewer units than threads; qBlock is
    // then 1): the visible keys are cut in `split` runs, one per unit, each read by one thread;
    // attentionCombine merges the partial results (their maxima, sums and unnormalised outputs).
    const pair = u / split, part = u % split;
    const tb = pair / numKvHeads, kvh = pair % numKvHeads;
    const t0 = tb * qBlock, nt = min(qBlock, T - t0), R = nt * group;
    const qLast = pos0 + t0 + nt - 1;
    const lo = window > 0 ? max(0, pos0 + t0 - window + 1) : 0;
    const visible = qLast - lo + 1;
    const j0 = lo + <i32>((<i64>visible * part) / split), j1 = lo + <i32>((<i64>visible * (part + 1)) / split);
    const n = j1 - j0;
    // scratch: n key addresses, n value addresses, n scores per query row, a spare slot per row,
    // then KB f32 rows for cached rows widened from f16 and their KB addresses.
    const keys = scratch, vals = keys + (<usize>n << 2), scores = vals + (<usize>n << 2);
    const ss = <usize>n << 2;
    const spare = scores + <usize>R * ss;
    const conv = (spare + (<usize>R << 2) + 15) & ~<usize>15;
    const ptrs = conv + <usize>KB * rowBytes;
    for (let j = 0; j < n; j++) {
      const p = j0 + j;
      let kr: usize, vr: usize;
      if (p >= pos0) {
        const row = (<usize>(p - pos0) * <usize>kvDim + <usize>(kvh * headDim)) << 2;
        kr = k + row;
        vr = v + row;
      } else {
        const slot = ring != 0 ? p % capacity : p;
        const row = (<usize>slot * <usize>kvDim + <usize>(kvh * headDim)) << (kvHalf != 0 ? 1 : 2);
        kr = cacheK + row;
        vr = cacheV + row;
      }
      store<u32>(keys + (<usize>j << 2), <u32>kr);
      store<u32>(vals + (<usize>j << 2), <u32>vr);
    }
    // Keys j < nHalf are f16 rows of the cache (positions before pos0 come first).
    const nHalf = kvHalf != 0 ? min(n, max(0, pos0 - j0)) : 0;
    const q0 = q + ((<usize>t0 * <usize>numHeads + <usize>(kvh * group)) * <usize>headDim << 2);
    // Scores, a block of KB keys at a time (cached f16 rows widened once per block): with an even
    // group, tiles of two heads × four keys (eight sums in registers, each loaded key chunk serving
    // two heads); otherwise each head against four keys.
    const vs = f32x4.splat(scale);
    const pairs = (group & 1) == 0;
    for (let jb = 0; jb < n; jb += KB) {
      const nb = min(KB, n - jb);
      f32Rows(keys + (<usize>jb << 2), nb, nHalf - jb, conv, headDim, ptrs);
      const sb = scores + (<usize>jb << 2);
      let i = 0;
      for (; i + 4 <= nb; i += 4) {
        const a = ptrs + (<usize>i << 2);
        const k0 = <usize>load<u32>(a), k1 = <usize>load<u32>(a, 4), k2 = <usize>load<u32>(a, 8), k3 = <usize>load<u32>(a, 12);
        for (let tt = 0; tt < nt; tt++) {
          const qt = q0 + <usize>tt * ts, si = sb + <usize>(tt * group) * ss + (<usize>i << 2);
          if (pairs) {
            for (let g = 0; g < group; g += 2) scores2x4(qt + <usize>g * qs, qs, k0, k1, k2, k3, headDim, vs, si + <usize>g * ss, ss);
          } else {
            for (let g = 0; g < group; g++) v128.store(si + <usize>g * ss, f32x4.mul(dot4(qt + <usize>g * qs, k0, k1, k2, k3, headDim), vs));
          }
        }
      }
      for (; i < nb; i++) {
        const kr = <usize>load<u32>(ptrs + (<usize>i << 2));
        for (let r = 0; r < R; r++) {
          const qr = q0 + <usize>(r / group) * ts + <usize>(r % group) * qs;
          store<f32>(sb + <usize>r * ss + (<usize>i << 2), dot(qr, kr, headDim) * scale);
        }
      }
    }
    // A block's queries see slightly different keys: mask each row's invisible ones (at most
    // nt − 1 at either end) before the softmax.
    if (nt > 1) {
      for (let tt = 0; tt < nt; tt++) {
        const qp = pos0 + t0 + tt;
        const first = (window > 0 ? max(0, qp - window + 1) : 0) - j0, last = qp - j0; // visible: first..last
        for (let g = 0; g < group; g++) {
          const sr = scores + <usize>(tt * group + g) * ss;
          for (let j = 0; j < first; j++) store<f32>(sr + (<usize>j << 2), -Infinity);
          for (let j = last + 1; j < n; j++) store<f32>(sr + (<usize>j << 2), -Infinity);
        }
      }
    }
    // Softmax weights per row; the sum's inverse (split 1) or the max and sum (partial slot:
    // max, sum, then headDim unnormalised outputs) kept for after the values.
    for (let r = 0; r < R; r++) {
      const sr = scores + <usize>r * ss;
      if (split == 1) {
        const sum = softmaxWeights(sr, n, spare + (<usize>r << 2));
        store<f32>(spare + (<usize>r << 2), <f32>(1 / sum));
      } else {
        const slot = partials + ((<usize>(pair * group + r) * <usize>split + <usize>part) * <usize>(headDim + 2) << 2);
        store<f32>(slot, <f32>softmaxWeights(sr, n, slot), 4);
      }
    }
    // Values, a block of KB rows at a time (read once, widened once): with an even group and
    // headDim a multiple of 16, tiles of two heads × sixteen dims summed over the block in
    // registers; otherwise four rows at a time into each query row's output.
    const o0 = split == 1 ? out + (q0 - q) : partials + ((<usize>(pair * group) * <usize>split + <usize>part) * <usize>(headDim + 2) << 2) + 8;
    const os = split == 1 ? qs : (<usize>split * <usize>(headDim + 2)) << 2; // next head's output (one token when split > 1)
    for (let tt = 0; tt < nt; tt++) for (let g = 0; g < group; g++) memory.fill(o0 + <usize>tt * ts + <usize>g * os, 0, rowBytes);
    const tiled = pairs && (headDim & 15) == 0;
    for (let jb = 0; jb < n; jb += KB) {
      const nb = min(KB, n - jb);
      f32Rows(vals + (<usize>jb << 2), nb, nHalf - jb, conv, headDim, ptrs);
      const wb = scores + (<usize>jb << 2);
      for (let tt = 0; tt < nt; tt++) {
        const ot = o0 + <usize>tt * ts, wt = wb + <usize>(tt * group) * ss;
        if (tiled) {
          for (let g = 0; g < group; g += 2) addBlock2x16(wt + <usize>g * ss, ss, ptrs, nb, headDim, ot + <usize>g * os, os);
          continue;
        }
        let i = 0;
        for (; i + 4 <= nb; i += 4) {
          const a = ptrs + (<usize>i << 2);
          const r0 = <usize>load<u32>(a), r1 = <usize>load<u32>(a, 4), r2 = <usize>load<u32>(a, 8), r3 = <usize>load<u32>(a, 12);
          for (let g = 0; g < group; g++) addRows4(wt + <usize>g * ss + (<usize>i << 2), r0, r1, r2, r3, headDim, ot + <usize>g * os);
        }
        for (; i < nb; i++) {
          const vr = <usize>load<u32>(ptrs + (<usize>i << 2));
          for (let g = 0; g < group; g++) axpy(load<f32>(wt + <usize>g * ss + (<usize>i << 2)), vr, ot + <usize>g * os, headDim);
        }
      }
    }
    if (split == 1) {
      for (let tt = 0; tt < nt; tt++) for (let g = 0; g < group; g++) scaleRow(o0 + <usize>tt * ts + <usize>g * os, headDim, load<f32>(spare + (<usize>(tt * group + g) << 2)));
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

/** [q·k0, q·k1, q·k2, q·k3] over n f32. */
@inline function dot4(q: usize, k0: usize, k1: usize, k2: usize, k3: usize, n: i32): v128 {
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    const x = v128.load(q + o);
    a0 = madd(x, v128.load(k0 + o), a0);
    a1 = madd(x, v128.load(k1 + o), a1);
    a2 = madd(x, v128.load(k2 + o), a2);
    a3 = madd(x, v128.load(k3 + o), a3);
  }
  let s = lanes4(a0, a1, a2, a3);
  for (; i < n; i++) {
    const o = <usize>i << 2;
    const x = load<f32>(q + o);
    s = f32x4.add(s, f32x4(x * load<f32>(k0 + o), x * load<f32>(k1 + o), x * load<f32>(k2 + o), x * load<f32>(k3 + o)));
  }
  return s;
}

/**
 * Row addresses of a block of nb keys (or values) from the unit's list at `list`, into `ptrs`; the
 * first `half` of them are f16 rows of the cache, widened into `conv` (one row per slot).
 */
@inline function f32Rows(list: usize, nb: i32, half: i32, conv: usize, headDim: i32, ptrs: usize): void {
  const rowBytes = <usize>headDim << 2;
  for (let i = 0; i < nb; i++) {
    let a = <usize>load<u32>(list + (<usize>i << 2));
    if (i < half) a = halfRow(a, conv + <usize>i * rowBytes, headDim);
    store<u32>(ptrs + (<usize>i << 2), <u32>a);
  }
}

/**
 * Scores of two heads (query rows qa and qa + qs) against four key rows, times `vs`: head 0's four
 * at s, head 1's at s + ss. Eight running sums, each key chunk loaded once for both heads.
 */
@inline function scores2x4(qa: usize, qs: usize, k0: usize, k1: usize, k2: usize, k3: usize, n: i32, vs: v128, s: usize, ss: usize): void {
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
  let b0 = f32x4.splat(0), b1 = f32x4.splat(0), b2 = f32x4.splat(0), b3 = f32x4.splat(0);
  const qb = qa + qs;
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    const x = v128.load(qa + o), y = v128.load(qb + o);
    const c0 = v128.load(k0 + o), c1 = v128.load(k1 + o), c2 = v128.load(k2 + o), c3 = v128.load(k3 + o);
    a0 = madd(x, c0, a0);
    b0 = madd(y, c0, b0);
    a1 = madd(x, c1, a1);
    b1 = madd(y, c1, b1);
    a2 = madd(x, c2, a2);
    b2 = madd(y, c2, b2);
    a3 = madd(x, c3, a3);
    b3 = madd(y, c3, b3);
  }
  let sa = lanes4(a0, a1, a2, a3), sb = lanes4(b0, b1, b2, b3);
  for (; i < n; i++) {
    const o = <usize>i << 2;
    const x = load<f32>(qa + o), y = load<f32>(qb + o);
    const c = f32x4(load<f32>(k0 + o), load<f32>(k1 + o), load<f32>(k2 + o), load<f32>(k3 + o));
    sa = madd(f32x4.splat(x), c, sa);
    sb = madd(f32x4.splat(y), c, sb);
  }
  v128.store(s, f32x4.mul(sa, vs));
  v128.store(s + ss, f32x4.mul(sb, vs));
}

/** [Σ lanes of a0, of a1, of a2, of a3]: two rounds of interleave-and-add. */
@inline function lanes4(a0: v128, a1: v128, a2: v128, a3: v128): v128 {
  const ab = f32x4.add(v128.shuffle<f32>(a0, a1, 0, 4, 1, 5), v128.shuffle<f32>(a0, a1, 2, 6, 3, 7));
  const cd = f32x4.add(v128.shuffle<f32>(a2, a3, 0, 4, 1, 5), v128.shuffle<f32>(a2, a3, 2, 6, 3, 7));
  return f32x4.add(v128.shuffle<f64>(ab, cd, 0, 2), v128.shuffle<f64>(ab, cd, 1, 3));
}

/**
 * Two heads' outputs (o0 and o0 + os) += Σ_i w[i]·V_i over the nb value rows at ptrs, with head 0's
 * weights at w and head 1's at w + ws; dim a multiple of 16. Per sixteen dims the block's sums stay
 * in eight registers and reach the output rows once.
 */
function addBlock2x16(w: usize, ws: usize, ptrs: usize, nb: i32, dim: i32, o0: usize, os: usize): void {
  const o1 = o0 + os;
  for (let d = 0; d < dim; d += 16) {
    const od = <usize>d << 2;
    let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
    let b0 = f32x4.splat(0), b1 = f32x4.splat(0), b2 = f32x4.splat(0), b3 = f32x4.splat(0);
    for (let i = 0; i < nb; i++) {
      const r = <usize>load<u32>(ptrs + (<usize>i << 2)) + od;
      const e = v128.load32_splat(w + (<usize>i << 2)), f = v128.load32_splat(w + ws + (<usize>i << 2));
      const v0 = v128.load(r), v1 = v128.load(r, 16), v2 = v128.load(r, 32), v3 = v128.load(r, 48);
      a0 = madd(e, v0, a0);
      b0 = madd(f, v0, b0);
      a1 = madd(e, v1, a1);
      b1 = madd(f, v1, b1);
      a2 = madd(e, v2, a2);
      b2 = madd(f, v2, b2);
      a3 = madd(e, v3, a3);
      b3 = madd(f, v3, b3);
    }
    v128.store(o0 + od, f32x4.add(v128.load(o0 + od), a0));
    v128.store(o0 + od, f32x4.add(v128.load(o0 + od, 16), a1), 16);
    v128.store(o0 + od, f32x4.add(v128.load(o0 + od, 32), a2), 32);
    v128.store(o0 + od, f32x4.add(v128.load(o0 + od, 48), a3), 48);
    v128.store(o1 + od, f32x4.add(v128.load(o1 + od), b0));
    v128.store(o1 + od, f32x4.add(v128.load(o1 + od, 16), b1), 16);
    v128.store(o1 + od, f32x4.add(v128.load(o1 + od, 32), b2), 32);
    v128.store(o1 + od, f32x4.add(v128.load(o1 + od, 48), b3), 48);
  }
}

/**
 * out[d] += Σ_i w[i]·r_i[d] over four value rows (weights w[0..4)), running along the rows with
 * the output row as the accumulator (it stays in L1).
 */
@inline function addRows4(w: usize, r0: usize, r1: usize, r2: usize, r3: usize, dim: i32, out: usize): void {
  const e0 = v128.load32_splat(w), e1 = v128.load32_splat(w, 4), e2 = v128.load32_splat(w, 8), e3 = v128.load32_splat(w, 12);
  const d4 = dim & ~3;
  for (let d = 0; d < d4; d += 4) {
    const o = <usize>d << 2;
    let acc = madd(e0, v128.load(r0 + o), v128.load(out + o));
    acc = madd(e1, v128.load(r1 + o), acc);
    acc = madd(e2, v128.load(r2 + o), acc);
    v128.store(out + o, madd(e3, v128.load(r3 + o), acc));
  }
  for (let d = d4; d < dim; d++) {
    const o = <usize>d << 2;
    store<f32>(out + o, load<f32>(out + o) + load<f32>(w) * load<f32>(r0 + o) + load<f32>(w, 4) * load<f32>(r1 + o) + load<f32>(w, 8) * load<f32>(r2 + o) + load<f32>(w, 12) * load<f32>(r3 + o));
  }
}

/** x[0..dim) *= s. */
function scaleRow(x: usize, dim: i32, s: f32): void {
  const vs = f32x4.splat(s);
  const d4 = dim & ~3;
  for (let d = 0; d < d4; d += 4) v128.store(x + (<usize>d << 2), f32x4.mul(v128.load(x + (<usize>d << 2)), vs));
  for (let d = d4; d < dim; d++) store<f32>(x + (<usize>d << 2), load<f32>(x + (<usize>d << 2)) * s);
}

/**
 * A cached row of n IEEE halves at src, widened to f32 at dst; returns dst. Eight lanes at a time:
 * sign-extended to i32 and shifted left 13, the sign lands in bit 31 and exponent and mantissa in
 * bits 13..27; masking bits 28..30 leaves an f32 whose value is the half's times 2^-112 (subnormal
 * halves and zero included), so one multiply by 2^112 gives the exact value. Halves are never
 * infinite or NaN here: the cache clamps what it stores to ±65504.
 */
function halfRow(src: usize, dst: usize, n: i32): usize {
  const mask = i32x4.splat(0x8fffe000), mag = f32x4.splat(5.192296858534828e33);
  let i = 0;
  for (; i + 8 <= n; i += 8) {
    const h = v128.load(src + (<usize>i << 1));
    v128.store(dst + (<usize>i << 2), f32x4.mul(v128.and(i32x4.shl(i32x4.extend_low_i16x8_s(h), 13), mask), mag));
    v128.store(dst + (<usize>i << 2), f32x4.mul(v128.and(i32x4.shl(i32x4.extend_high_i16x8_s(h), 13), mask), mag), 16);
  }
  for (; i < n; i++) {
    const b = (<i32>load<i16>(src + (<usize>i << 1)) << 13) & 0x8fffe000;
    store<f32>(dst + (<usize>i << 2), reinterpret<f32>(b) * <f32>5.192296858534828e33);
  }
  return dst;
}

/**
 * e^x for four lanes with x ≤ 0 (scores minus their max), by expf4. Below −44 the result is 0:
 * such a weight (under 8e-20 of the largest) changes no f32 sum, while its products with value
 * rows would land among the subnormal f32s, which x86 cores compute in slow microcode (a decode
 * step over 16k keys whose scores spread that wide took 40% longer, EXPERIMENTS LC3). NaN stays NaN.
 */
@inline function exp4(x: v128): v128 {
  return v128.andnot(expf4(f32x4.max(x, f32x4.splat(-44))), f32x4.lt(x, f32x4.splat(-44)));
}
