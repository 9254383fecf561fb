// The kernels module: every export the host (src/backend/wasm/) calls. Kernels never allocate:
// they read and write host-managed addresses in the one shared memory.
import { gemv } from './gemv';
import { gemm } from './gemm';
import { gemmQ8, gemvTokens, q8TokenBytes } from './gemm-q8';
export { quantizeTokens, q8TokenBytes, q8Layout } from './gemm-q8';
import { q8Of, colsOf, rowsOf } from './matrix';
export { attention, attentionCombine } from './attention';
export { rmsNorm, rope, ropeTrig, geluMul, softcap, firstNonFinite, add, addProduct, scale, embedRow } from './elementwise';
export { decodeRow } from './decode';
export { lutToPlanar, lutToInt8, lutToNibbles } from './lut-q8';
export { roundF16 } from './fp16';

/**
 * out[t, r] = w[r]·x[t] for rows r0..r1 (one thread's share). With q8 activations, x holds the
 * tokens already quantized by quantizeTokens.
 */
export function matmul(d: usize, x: usize, T: i32, out: usize, r0: i32, r1: i32, scratch: usize): void {
  if (T == 1) gemv(d, x, out, r0, r1, scratch);
  else if (q8Of(d) && gemvTokens(d, T)) {
    // A few tokens (a batched decode step, a speculative verify): each block of 32 rows is read
    // from memory by the first token's GEMV and from cache by the others'.
    const xs = q8TokenBytes(colsOf(d)), os = <usize>rowsOf(d) << 2;
    for (let b = r0; b < r1; b += 32) {
      const e = min(r1, b + 32);
      for (let t = 0; t < T; t++) gemv(d, x + <usize>t * xs, out + <usize>t * os, b, e, scratch);
    }
  } else if (q8Of(d)) gemmQ8(d, x, T, out, r0, r1, scratch);
  else gemm(d, x, T, out, r0, r1, scratch);
}

/** End of the module's static data: the host's arena starts above it. */
export function heapBase(): usize {
  return __heap_base;
}
