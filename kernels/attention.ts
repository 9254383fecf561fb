// Causal (optionally sliding-window) attention for queries (t, h) with u0 ≤ t·numHeads + h < u1.
// Keys of positions ≥ pos0 come from this batch's k/v; older ones from the cache (ring slot
// p % capacity). Each query is scored against exactly the keys it can see, so Q-chunking (which
// only changes the masked-out set) does not change the result.
import { dot, axpy } from './dot';

export function attention(
  q: usize, k: usize, v: usize, cacheK: usize, cacheV: usize, capacity: i32, ring: i32,
  pos0: i32, numHeads: i32, numKvHeads: i32, headDim: i32, scale: f32, window: i32,
  out: usize, u0: i32, u1: i32, scratch: usize,
): void {
  const kvDim = numKvHeads * headDim;
  const group = numHeads / numKvHeads;
  const acc = scratch; // headDim f32, then the scores
  const scores = scratch + ((<usize>headDim + 4) << 2);
  for (let u = u0; u < u1; u++) {
    const t = u / numHeads, h = u % numHeads;
    const kvOff = <usize>((h / group) * headDim) << 2;
    const qp = pos0 + t;
    const lo = window > 0 ? max(0, qp - window + 1) : 0;
    const qv = q + ((<usize>t * <usize>numHeads + <usize>h) * <usize>headDim << 2);
    let mx: f32 = -Infinity;
    for (let p = lo; p <= qp; p++) {
      const s = dot(qv, keyRow(p, pos0, k, cacheK, capacity, ring, kvDim) + kvOff, headDim) * scale;
      store<f32>(scores + (<usize>(p - lo) << 2), s);
      if (s > mx) mx = s;
    }
    let sum: f64 = 0;
    memory.fill(acc, 0, <usize>headDim << 2);
    for (let p = lo; p <= qp; p++) {
      const e = Mathf.exp(load<f32>(scores + (<usize>(p - lo) << 2)) - mx);
      sum += e;
      axpy(e, keyRow(p, pos0, v, cacheV, capacity, ring, kvDim) + kvOff, acc, headDim);
    }
    const inv = <f32>(1 / sum);
    const o = out + (qv - q);
    for (let d = 0; d < headDim; d++) store<f32>(o + (<usize>d << 2), load<f32>(acc + (<usize>d << 2)) * inv);
  }
}

/** Address of the key (or value) vector of absolute position p. */
@inline function keyRow(p: i32, pos0: i32, batch: usize, cache: usize, capacity: i32, ring: i32, kvDim: i32): usize {
  if (p >= pos0) return batch + (<usize>(p - pos0) * <usize>kvDim << 2);
  const slot = ring != 0 ? p % capacity : p;
  return cache + (<usize>slot * <usize>kvDim << 2);
}
