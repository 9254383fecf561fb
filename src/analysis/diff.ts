// What a fine-tune changed: per layer and adapted matrix, ‖ΔW‖/‖W‖, the singular values of ΔW and
// its effective rank; per layer, the cosine between the two models' residual streams on prompts.
// The other model is a checkpoint or package of the same architecture and shapes, or the base plus
// LoRA adapters (then ΔW is the adapters' low-rank change, never formed as a dense matrix for its
// singular values).
import { openWeightSource } from '../io/source.js';
import { architectureOf } from '../arch/registry.js';
import { dequantize } from '../backend/reference/index.js';
import { readLoraAdapter, type LoraUse } from '../adapters/lora.js';
import { PreparedLora, stackLora } from '../adapters/apply.js';
import type { Backend } from '../backend/backend.js';
import type { CausalLM, Observer } from '../model/forward.js';
import { loadModel } from '../runtime/load.js';
import { Session } from '../runtime/session.js';
import { LutraError } from '../util/errors.js';
import { effectiveRank, lowRankSingularValues, singularValues } from './linalg.js';

export interface MatrixChange {
  /** e.g. model.layers.3.self_attn.q_proj.weight */
  name: string;
  layer: number;
  /** e.g. self_attn.q_proj */
  module: string;
  /** ‖ΔW‖_F / ‖W‖_F of the base. */
  relNorm: number;
  /** The largest singular values of ΔW (at most `top`). */
  singular: number[];
  effectiveRank: number;
  /** Singular values needed for 99% of ‖ΔW‖²_F. */
  rank99: number;
}

export interface LayerChange {
  layer: number;
  /** √(Σ‖ΔW‖²) / √(Σ‖W‖²) over the layer's adapted matrices. */
  relNorm: number;
  /** Mean and least cosine of the two models' residual streams after this layer, over prompt positions. */
  cosineMean: number | null;
  cosineMin: number | null;
}

export interface DiffReport {
  base: string;
  other: string;
  modules: string[];
  matrices: MatrixChange[];
  layers: LayerChange[];
  /** Layers by relNorm, most moved first. */
  mostMoved: number[];
  prompts: number;
}

export interface DiffOptions {
  /** A second model folder (checkpoint or package), or null with `lora`. */
  other: string | null;
  /** Adapters whose change against the base is measured (with other = null). */
  lora?: readonly { dir: string; weight: number }[];
  /** Token ids of the prompts the residual streams are compared on (none: weights only). */
  prompts?: number[][];
  backend: () => Backend;
  /** Singular values kept per matrix. */
  top?: number;
  onProgress?: (done: number, total: number) => void;
}

const LAYER = /^model\.layers\.(\d+)\.(.+)\.weight$/;

export function diffModels(baseDir: string, opts: DiffOptions): DiffReport {
  if ((opts.other === null) === !(opts.lora && opts.lora.length > 0)) throw new LutraError('diff: give another model or LoRA adapters to compare the base with, not both');
  const top = opts.top ?? 16;
  const base = openWeightSource(baseDir);
  const other = opts.other === null ? null : openWeightSource(opts.other);
  const matrices: MatrixChange[] = [];
  const sums = new Map<number, { d: number; w: number }>();
  try {
    const manifest = architectureOf(base.config).tensors(base.config, base);
    const targets = manifest.filter((t) => (t.part === 'attn' || t.part === 'ffn') && t.shape.length === 2 && LAYER.test(t.name));
    const uses: LoraUse[] = (opts.lora ?? []).map((l) => ({ adapter: readLoraAdapter(l.dir, manifest), weight: l.weight }));
    if (other) {
      if (other.config.modelType !== base.config.modelType) throw new LutraError(`${opts.other}: a ${other.config.modelType} model; the base ${baseDir} is ${base.config.modelType}`);
      for (const t of targets) {
        if (!other.has(t.name)) throw new LutraError(`${opts.other}: no tensor "${t.name}", which the base has`);
        const s = other.shape(t.name);
        if (s.join() !== t.shape.join()) throw new LutraError(`${opts.other}: tensor "${t.name}" has shape [${s.join(', ')}]; the base's is [${t.shape.join(', ')}]`);
      }
    }
    targets.forEach((t, i) => {
      const [, layerText, module] = LAYER.exec(t.name)!;
      const layer = Number(layerText);
      const [rows, cols] = t.shape;
      const w = dequantize(base.load(t.name));
      let wn = 0;
      for (let k = 0; k < w.length; k++) wn += w[k] * w[k];
      let dn = 0;
      let sv: Float64Array;
      if (other) {
        const o = dequantize(other.load(t.name));
        const d = new Float64Array(o.length);
        for (let k = 0; k < d.length; k++) {
          d[k] = o[k] - w[k];
          dn += d[k] * d[k];
        }
        sv = dn === 0 ? new Float64Array(0) : singularValues(d, rows, cols);
      } else {
        // Σ wᵢ·sᵢ·BᵢAᵢ as one low-rank product, as PreparedLora runs it.
        const st = stackLora(uses, t.name);
        sv = st ? lowRankSingularValues(st.A, st.B, st.rank, cols, rows, 1) : new Float64Array(0);
        for (const x of sv) dn += x * x;
      }
      const sum = sums.get(layer) ?? { d: 0, w: 0 };
      sum.d += dn;
      sum.w += wn;
      sums.set(layer, sum);
      let acc = 0;
      let rank99 = 0;
      while (rank99 < sv.length && acc < 0.99 * dn) acc += sv[rank99] * sv[rank99++];
      matrices.push({ name: t.name, layer, module, relNorm: Math.sqrt(dn / wn), singular: Array.from(sv.subarray(0, top)), effectiveRank: effectiveRank(sv), rank99 });
      opts.onProgress?.(i + 1, targets.length);
    });
  } finally {
    base.close();
    other?.close();
  }
  const cos = opts.prompts && opts.prompts.length > 0 ? residualCosines(baseDir, opts) : null;
  const layers: LayerChange[] = [...sums.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([layer, s]) => ({ layer, relNorm: Math.sqrt(s.d / s.w), cosineMean: cos ? cos.mean[layer] : null, cosineMin: cos ? cos.min[layer] : null }));
  const mostMoved = [...layers].sort((a, b) => b.relNorm - a.relNorm || a.layer - b.layer).map((l) => l.layer);
  const modules = [...new Set(matrices.map((m) => m.module))];
  return { base: baseDir, other: opts.other ?? (opts.lora ?? []).map((l) => (l.weight === 1 ? l.dir : `${l.dir}:${l.weight}`)).join(' + '), modules, matrices, layers, mostMoved, prompts: opts.prompts?.length ?? 0 };
}

/** Per layer, the mean and least cosine between the residual streams of base and other over every prompt position. */
function residualCosines(baseDir: string, opts: DiffOptions): { mean: number[]; min: number[] } {
  const runs: { model: CausalLM; lora: PreparedLora | null }[] = [];
  const backends: Backend[] = [];
  const backend = () => {
    backends.push(opts.backend());
    return backends[backends.length - 1];
  };
  try {
    const { model: baseModel, lora } = loadModel(baseDir, backend(), { tokenizer: false, lora: opts.other === null ? opts.lora : undefined });
    runs.push({ model: baseModel, lora: null });
    if (opts.other === null) runs.push({ model: baseModel, lora });
    else runs.push({ model: loadModel(opts.other, backend(), { tokenizer: false }).model, lora: null });
    const L = baseModel.numLayers;
    const sum = new Float64Array(L);
    const min = new Array<number>(L).fill(1);
    let count = 0;
    for (const ids of opts.prompts!) {
      const streams = runs.map(({ model, lora }) => {
        const per: Float32Array[] = [];
        const watch: Observer = (layer, point, data) => {
          if (point === 'residual') per[layer] = data.slice();
        };
        const s = new Session(model, { contextLength: ids.length, prefillBatch: ids.length, lora });
        try {
          s.prefill(ids, { observer: watch });
        } finally {
          s.dispose();
        }
        return per;
      });
      const H = streams[0][0].length / ids.length;
      for (let l = 0; l < L; l++) {
        for (let t = 0; t < ids.length; t++) {
          let ab = 0;
          let aa = 0;
          let bb = 0;
          for (let i = t * H; i < (t + 1) * H; i++) {
            const x = streams[0][l][i];
            const y = streams[1][l][i];
            ab += x * y;
            aa += x * x;
            bb += y * y;
          }
          const c = aa === 0 || bb === 0 ? (aa === bb ? 1 : 0) : ab / Math.sqrt(aa * bb);
          sum[l] += c;
          min[l] = Math.min(min[l], c);
        }
      }
      count += ids.length;
    }
    return { mean: Array.from(sum, (s) => s / count), min };
  } finally {
    for (const b of backends) b.dispose?.();
  }
}
