// FP16 residual scaling (seed 000/003): a weight-only transform by α in (0, 1]. The post-attention
// and post-feedforward norm gains become α(1+w) − 1 and the embedding output is multiplied by α
// (folded into the recorded embedding scale, so the tied LM head is not duplicated). Pre-norms and
// the final norm are scale-invariant, so the logits are unchanged: no division at the end.
import type { WeightTensor } from '../model/weight.js';
import { dequantize } from '../backend/reference/index.js';
import { LutraError } from '../util/errors.js';

export const SCALED_NORM = /\.(post_attention_layernorm|post_feedforward_layernorm)\.weight$/;

export function checkAlpha(alpha: number, where: string): number {
  if (!Number.isFinite(alpha) || alpha <= 0 || alpha > 1) throw new LutraError(`${where}: α must be in (0, 1], got ${alpha}`);
  return alpha;
}

/** The scaled post-norm offsets w' = α(1 + w) − 1, kept in f32 so the transform stays exact. */
export function scalePostNorm(w: WeightTensor, alpha: number): WeightTensor {
  const x = dequantize(w);
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = Math.fround(alpha * Math.fround(1 + x[i]) - 1);
  return { ...w, format: { kind: 'f32' }, data: new Uint8Array(out.buffer) };
}
