// Prefill (T > 1): out[t, r] = w[r]·x[t] for rows r0..r1. Four rows are decoded to f32 once
// (into this thread's scratch) and reused for every token of the batch; a 4-row × 2-token
// register tile reads each decoded weight vector once per token pair, and a 4 × 1 tile takes an
// odd batch's last token. Multiply-adds are fused in the relaxed build (madd). Wider tiles spill
// V8's 16 vector registers and run slower (EXPERIMENTS W52).
import { F32, fmtOf, colsOf, rowsOf, rowPtr } from './matrix';
import { decodeRow } from './decode';
import { dot, hsum, madd } from './dot';

export function gemm(d: usize, x: usize, T: i32, out: usize, r0: i32, r1: i32, scratch: usize): void {
  const cols = colsOf(d);
  const rows = rowsOf(d);
  const plain = fmtOf(d) == F32;
  const rowBytes = <usize>cols << 2;
  for (let r = r0; r < r1; r += 4) {
    const nr = min(4, r1 - r);
    let w: usize;
    if (plain) {
      w = rowPtr(d, r);
    } else {
      w = scratch;
      for (let j = 0; j < nr; j++) decodeRow(d, r + j, scratch + <usize>j * rowBytes);
    }
    let t = 0;
    if (nr == 4) {
      for (; t + 2 <= T; t += 2) tile4x2(w, rowBytes, x + <usize>t * rowBytes, cols, out + ((<usize>t * <usize>rows + <usize>r) << 2), <usize>rows << 2);
      if (t < T) {
        tile4x1(w, rowBytes, x + <usize>t * rowBytes, cols, out + ((<usize>t * <usize>rows + <usize>r) << 2));
        t++;
      }
    }
    for (; t < T; t++) {
      const xt = x + <usize>t * rowBytes;
      for (let j = 0; j < nr; j++) store<f32>(out + ((<usize>t * <usize>rows + <usize>(r + j)) << 2), dot(w + <usize>j * rowBytes, xt, cols));
    }
  }
}

/** 4 rows (stride ws bytes) × 2 tokens (x0, x0 + ws): 8 dot products, out rows os bytes apart. */
function tile4x2(w: usize, ws: usize, x0: usize, n: i32, out: usize, os: usize): void {
  const w1 = w + ws, w2 = w1 + ws, w3 = w2 + ws, x1 = x0 + ws;
  let a00 = f32x4.splat(0), a10 = f32x4.splat(0), a20 = f32x4.splat(0), a30 = f32x4.splat(0);
  let a01 = f32x4.splat(0), a11 = f32x4.splat(0), a21 = f32x4.splat(0), a31 = f32x4.splat(0);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    const u = v128.load(x0 + o), v = v128.load(x1 + o);
    const b0 = v128.load(w + o), b1 = v128.load(w1 + o), b2 = v128.load(w2 + o), b3 = v128.load(w3 + o);
    a00 = madd(b0, u, a00); a01 = madd(b0, v, a01);
    a10 = madd(b1, u, a10); a11 = madd(b1, v, a11);
    a20 = madd(b2, u, a20); a21 = madd(b2, v, a21);
    a30 = madd(b3, u, a30); a31 = madd(b3, v, a31);
  }
  let s00 = hsum(a00), s10 = hsum(a10), s20 = hsum(a20), s30 = hsum(a30);
  let s01 = hsum(a01), s11 = hsum(a11), s21 = hsum(a21), s31 = hsum(a31);
  for (; i < n; i++) {
    const o = <usize>i << 2;
    const u = load<f32>(x0 + o), v = load<f32>(x1 + o);
    const b0 = load<f32>(w + o), b1 = load<f32>(w1 + o), b2 = load<f32>(w2 + o), b3 = load<f32>(w3 + o);
    s00 += b0 * u; s01 += b0 * v; s10 += b1 * u; s11 += b1 * v;
    s20 += b2 * u; s21 += b2 * v; s30 += b3 * u; s31 += b3 * v;
  }
  store<f32>(out, s00); store<f32>(out, s10, 4); store<f32>(out, s20, 8); store<f32>(out, s30, 12);
  const o1 = out + os;
  store<f32>(o1, s01); store<f32>(o1, s11, 4); store<f32>(o1, s21, 8); store<f32>(o1, s31, 12);
}

/** 4 rows (stride ws bytes) × 1 token: an odd batch's last token, its vector loaded once for the 4 rows. */
function tile4x1(w: usize, ws: usize, x0: usize, n: i32, out: usize): void {
  const w1 = w + ws, w2 = w1 + ws, w3 = w2 + ws;
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    const u = v128.load(x0 + o);
    a0 = madd(v128.load(w + o), u, a0);
    a1 = madd(v128.load(w1 + o), u, a1);
    a2 = madd(v128.load(w2 + o), u, a2);
    a3 = madd(v128.load(w3 + o), u, a3);
  }
  let s0 = hsum(a0), s1 = hsum(a1), s2 = hsum(a2), s3 = hsum(a3);
  for (; i < n; i++) {
    const o = <usize>i << 2;
    const u = load<f32>(x0 + o);
    s0 += load<f32>(w + o) * u; s1 += load<f32>(w1 + o) * u; s2 += load<f32>(w2 + o) * u; s3 += load<f32>(w3 + o) * u;
  }
  store<f32>(out, s0); store<f32>(out, s1, 4); store<f32>(out, s2, 8); store<f32>(out, s3, 12);
}

