// The kernels module: every export the host (src/backend/wasm/) calls. Kernels never allocate:
// they read and write host-managed addresses in the one shared memory.
import { gemv } from './gemv';
import { gemm } from './gemm';
import { gemmQ8 } from './gemm-q8';
export { quantizeTokens, q8TokenBytes } from './gemm-q8';
import { q8Of } from './matrix';
export { attention, attentionCombine } from './attention';
export { rmsNorm, rope, ropeTrig, geluMul, softcap, add, addProduct, scale, embedRow } from './elementwise';
export { decodeRow } from './decode';
export { lutToPlanar } from './lut-q8';
export { roundF16 } from './fp16';

/**
 * out[t, r] = w[r]·x[t] for rows r0..r1 (one thread's share). With q8 activations, x holds the
 * tokens already quantized by quantizeTokens.
 */
export function matmul(d: usize, x: usize, T: i32, out: usize, r0: i32, r1: i32, scratch: usize): void {
  if (T == 1) gemv(d, x, out, r0, r1, scratch);
  else if (q8Of(d)) gemmQ8(d, x, T, out, r0, r1, scratch);
  else gemm(d, x, T, out, r0, r1, scratch);
}

/** End of the module's static data: the host's arena starts above it. */
export function heapBase(): usize {
  return __heap_base;
}
