// An fp16 overflow fixture: a random checkpoint whose f32 residual stream peaks at a chosen value
// above fp16's range, the way real Gemma 3 does (through large post-norm gains). One layer's
// post_feedforward_layernorm gain is raised until the residual after that layer reaches the peak
// on the calibration prompt.
import { Gemma3Model } from '../arch/gemma3/model.js';
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { writeFixture } from '../model/fixture.js';
import { Checkpoint } from '../io/checkpoint.js';
import { writeSafetensors } from '../io/safetensors.js';
import { f32ToBf16Bits } from '../util/half.js';
import { LutraError } from '../util/errors.js';
import { registerTemp, removeTemp, tempPathFor, writeOutput } from '../util/atomic-output.js';
import { loadModel } from '../runtime/load.js';
import { WasmBackend } from '../backend/wasm/index.js';
import { Session } from '../runtime/session.js';
import { auditFp16, CALIBRATION_PROMPT, type AuditResult } from './audit.js';
import { F32_NUMERICS } from './numerics.js';

/** Channel pattern of the raised gain: not uniform, so channels peak differently. */
const channelShape = (i: number) => (i % 2 ? 0.75 : 1);

export interface OverflowFixtureResult {
  layer: number;
  /** The realised f32 audit on the calibration prompt. */
  audit: AuditResult;
}

/** Write the `shape` fixture to `out` with its residual peak raised to about `peak` at `layer`. */
export async function writeOverflowFixture(out: string, shape: string, seed: number, peak: number, layer?: number): Promise<OverflowFixtureResult> {
  if (!(peak > 0) || !Number.isFinite(peak)) throw new LutraError(`--residual-peak ${peak}: expected a positive number (e.g. 2e5)`);
  if (existsSync(out)) throw new LutraError(`--out ${out}: already exists; choose a new path`);
  mkdirSync(dirname(out) || '.', { recursive: true });
  // The plain fixture the gain is solved on, in its own temporary folder next to the output.
  const scratch = tempPathFor(join(dirname(out), `${basename(out)}-base`));
  const base = join(scratch, 'base');
  registerTemp(scratch);
  rmSync(scratch, { recursive: true, force: true });
  mkdirSync(scratch);
  const backend = new WasmBackend();
  try {
    await writeFixture(base, shape, seed);
    const { model, tokenizer } = loadModel(base, backend, { numerics: F32_NUMERICS });
    const L = layer ?? Math.max(0, Math.floor(model.cfg.numLayers / 2) - 1);
    if (!Number.isInteger(L) || L < 0 || L >= model.cfg.numLayers) throw new LutraError(`--peak-layer ${layer}: expected 0..${model.cfg.numLayers - 1}`);
    const H = model.cfg.hiddenSize;
    const ids = tokenizer!.encodeChat([{ role: 'user', content: CALIBRATION_PROMPT }]);
    // The residual after layer L is h + g·f: h (before the MLP add) and f (the post-norm output
    // at gain channelShape) do not depend on the gain factor g, so record them once, then solve.
    let h = new Float32Array(0);
    let f = new Float32Array(0);
    new Session(model, { contextLength: ids.length, prefillBatch: ids.length }).prefill(ids, {
      observer: (l, point, data, rows) => {
        if (l !== L) return;
        if (point === 'residual_mid') h = data.slice(0, rows * H);
        if (point === 'ffn_post') f = data.slice(0, rows * H);
      },
    });
    if (!(model instanceof Gemma3Model)) throw new LutraError(`${base}: the overflow fixture is built from a Gemma 3 model`);
    const gains = model.layers[L].postFfnNorm; // 1 + w, as the model uses them
    for (let i = 0; i < f.length; i++) f[i] = (f[i] / gains[i % H]) * channelShape(i % H);
    const peakAt = (g: number) => h.reduce((m, v, i) => Math.max(m, Math.abs(v + g * f[i])), 0);
    let lo = 0;
    let hi = 1;
    while (peakAt(hi) < peak) hi *= 2;
    for (let it = 0; it < 60; it++) {
      const mid = (lo + hi) / 2;
      if (peakAt(mid) < peak) lo = mid;
      else hi = mid;
    }
    const g = hi;
    const name = `model.layers.${L}.post_feedforward_layernorm.weight`;
    return await writeOutput(out, { flag: '--out', kind: 'dir' }, async (next) => {
      mkdirSync(next);
      const ck = Checkpoint.open(base);
      try {
        await writeSafetensors(join(next, 'model.safetensors'), ck.names().map((n) => ({
          name: n,
          dtype: 'bf16' as const,
          shape: ck.shape(n),
          // Gemma stores gains as offsets from 1.
          bytes: () => (n !== name ? ck.load(n).data : new Uint8Array(Uint16Array.from({ length: H }, (_, i) => f32ToBf16Bits(g * channelShape(i) - 1)).buffer)),
        })), { format: 'pt', lutra_fixture: `${shape} seed ${seed}, residual peak ${peak} at layer ${L}` });
      } finally {
        ck.close();
      }
      for (const file of readdirSync(base)) if (file !== 'model.safetensors') copyFileSync(join(base, file), join(next, file));
      const audit = auditFp16(loadModel(next, backend, { numerics: F32_NUMERICS }).model, [ids]);
      return { layer: L, audit };
    });
  } finally {
    backend.dispose();
    removeTemp(scratch);
  }
}
