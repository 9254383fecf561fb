// FP16 residual scaling: a weight-only transform by α in (0, 1] that scales the residual stream.
// The embedding output is multiplied by α (folded into the recorded embedding scale, so the tied LM
// head is not duplicated); each architecture names the tensors that change and how (its
// fp16ScaleRule): the gains of the norms whose output is added to the stream take the α, a matrix
// that reads the stream without a norm first divides it out. Pre-norms and the final norm are
// scale-invariant, so the logits are unchanged: no division at the end.
import type { WeightTensor } from '../model/weight.js';
import { dequantize } from '../backend/reference/index.js';
import { LutraError } from '../util/errors.js';


export function checkAlpha(alpha: number, where: string): number {
  if (!Number.isFinite(alpha) || alpha <= 0 || alpha > 1) throw new LutraError(`${where}: α must be in (0, 1], got ${alpha}`);
  return alpha;
}

/** How one tensor changes under the α transform: a gain stored as an offset from 1, a plain multiplier, or a matrix divided by α. */
export type Fp16ScaleRule = 'offsetGain' | 'gain' | 'inverse';

/**
 * The tensor under the α transform, in f32 so the transform stays exact: an offset gain becomes
 * α(1 + w) − 1, a plain gain α·w, a matrix that reads the (now scaled) residual without a norm w/α.
 */
export function scaleForFp16(w: WeightTensor, rule: Fp16ScaleRule, alpha: number): WeightTensor {
  const x = dequantize(w);
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) {
    out[i] = rule === 'offsetGain' ? Math.fround(alpha * Math.fround(1 + x[i]) - 1) : rule === 'gain' ? Math.fround(alpha * x[i]) : Math.fround(x[i] / alpha);
  }
  return { ...w, format: { kind: 'f32' }, data: new Uint8Array(out.buffer) };
}
