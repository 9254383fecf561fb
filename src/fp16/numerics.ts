// The numerics a session runs in: plain f32 (the default), or fp16 as an accelerator computes it.
// Written on the command line as one spec: `f32`, `fp16`, `fp16,accumulate=fp16`, `fp16,clamp`.
import { LutraError } from '../util/errors.js';

export interface Numerics {
  mode: 'f32' | 'fp16';
  /** Precision of matmul sums, softmax sums and norm statistics (fp16 mode only). */
  accumulate: 'fp32' | 'fp16';
  /** Clip each residual add to ±65504 instead of letting it overflow (mlx-lm's clip_residual). */
  clampResidual: boolean;
}

export const F32_NUMERICS: Numerics = { mode: 'f32', accumulate: 'fp32', clampResidual: false };

export const NUMERICS_HELP =
  'f32, or fp16 (every activation rounded to fp16 at op boundaries, weights at fp16, overflow → inf); ' +
  'add ",accumulate=fp16" for fp16 sums in matmuls, softmax and norms, ",clamp" to clip residual adds at ±65504';

export function parseNumerics(text: string, where = '--numerics'): Numerics {
  const [mode, ...mods] = text.split(',').map((s) => s.trim().toLowerCase());
  if (mode !== 'f32' && mode !== 'fp16') throw new LutraError(`${where} ${text}: expected f32 or fp16 (optionally fp16,accumulate=fp16 or fp16,clamp)`);
  const n: Numerics = { ...F32_NUMERICS, mode };
  for (const m of mods) {
    if (mode === 'f32') throw new LutraError(`${where} ${text}: "${m}" only applies to fp16`);
    if (m === 'clamp') n.clampResidual = true;
    else if (m === 'accumulate=fp16' || m === 'accumulate=fp32') n.accumulate = m.slice('accumulate='.length) as Numerics['accumulate'];
    else throw new LutraError(`${where} ${text}: unknown modifier "${m}"; expected accumulate=fp32, accumulate=fp16 or clamp`);
  }
  return n;
}

export function numericsName(n: Numerics): string {
  if (n.mode === 'f32') return 'f32';
  return ['fp16', ...(n.accumulate === 'fp16' ? ['accumulate=fp16'] : []), ...(n.clampResidual ? ['clamp'] : [])].join(',');
}
