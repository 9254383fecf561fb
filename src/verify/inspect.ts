// `lutra inspect`: what a package, checkpoint or GGUF holds (meta, per-tensor format, shape and
// bytes) and, against a source model, how far each tensor moved: relative RMS error, cosine, and
// the condition figure max|W| / RMS(W) of the source, per tensor and for its worst output channel
// (the condition-number diagnostic: a large figure means a few outliers set a per-tensor scale or table and
// everything else gets few levels).
import { LutraError } from '../util/errors.js';
import { openWeightSource, type OpenedSource } from '../io/source.js';
import { PackageSource, storedBytes } from '../io/package.js';
import { GgufSource } from '../io/gguf-source.js';
import { ggufTypeName } from '../io/gguf.js';
import { rowDecoder } from '../backend/reference/index.js';
import { matrixShape, type WeightTensor } from '../model/weight.js';
import { formatName } from '../model/formats.js';
import type { ModelConfig } from '../arch/config-types.js';

export interface TensorReport {
  name: string;
  format: string;
  shape: number[];
  bytes: number;
  /** The ggml type, for GGUF files. */
  ggml?: string;
  /** Against the source: ‖W − S‖ / ‖S‖. */
  rel_rms?: number;
  cosine?: number;
  /** Of the source tensor: max|S| / RMS(S). */
  condition?: number;
  /** The largest per-output-channel condition figure, and its channel. */
  condition_worst_channel?: number;
  worst_channel?: number;
  /** Why a tensor was not compared. */
  note?: string;
}

export interface InspectReport {
  path: string;
  kind: string;
  meta: Record<string, unknown>;
  against?: string;
  tensors: TensorReport[];
  summary: {
    tensors: number;
    total_bytes: number;
    source_bytes?: number;
    worst_tensor?: string;
    worst_rel_rms?: number;
    min_cosine?: number;
  };
}

function configSummary(c: ModelConfig): Record<string, unknown> {
  return {
    model_type: c.modelType,
    vocab_size: c.vocabSize,
    hidden_size: c.hiddenSize,
    intermediate_size: c.intermediateSize,
    layers: c.numLayers,
    heads: c.numHeads,
    kv_heads: c.numKvHeads,
    head_dim: c.headDim,
    sliding_window: c.slidingWindow,
    context_length: c.maxPositions,
    global_layers: c.layerTypes.flatMap((t, i) => (t === 'full_attention' ? [i] : [])),
    tie_word_embeddings: c.tieWordEmbeddings,
  };
}

function metaOf(src: OpenedSource): Record<string, unknown> {
  if (src instanceof PackageSource) {
    const { tensors: _, ...meta } = src.meta;
    return meta;
  }
  if (src instanceof GgufSource) {
    const general: Record<string, unknown> = {};
    for (const [k, v] of src.file.metadata) if (k.startsWith('general.')) general[k] = typeof v === 'bigint' ? Number(v) : v;
    return { ...general, gguf_version: src.file.version, config: configSummary(src.config) };
  }
  return { config: configSummary(src.config) };
}

/** Bytes of a tensor as stored: the GGUF's own size, else what the format implies. */
function bytesOf(src: OpenedSource, name: string): { format: string; bytes: number; ggml?: string } {
  if (src instanceof GgufSource) {
    const info = src.file.tensorsByName.get(src.ggufName(name))!;
    let format = '?';
    try {
      format = formatName(src.format(name));
    } catch {
      // an unreadable ggml type: reported by its ggml name only
    }
    return { format, bytes: info.nbytes, ggml: ggufTypeName(info.type) };
  }
  const f = src.format(name);
  return { format: formatName(f), bytes: storedBytes(src.shape(name), f) };
}

/** Row-streamed error and condition figures: nothing is expanded beyond one row at a time. */
function compare(w: WeightTensor, s: WeightTensor): Pick<TensorReport, 'rel_rms' | 'cosine' | 'condition' | 'condition_worst_channel' | 'worst_channel'> {
  const flat = (t: WeightTensor) => ({ ...t, shape: matrixShape(t.shape) });
  const [rows, cols] = flat(w).shape;
  const dw = rowDecoder(flat(w));
  const ds = rowDecoder(flat(s));
  const a = new Float32Array(cols);
  const b = new Float32Array(cols);
  let err = 0, ss = 0, ww = 0, ws = 0, amax = 0;
  let worst = 0, worstRow = 0;
  for (let r = 0; r < rows; r++) {
    dw(r, a);
    ds(r, b);
    let rowSs = 0, rowMax = 0;
    for (let i = 0; i < cols; i++) {
      const d = a[i] - b[i];
      err += d * d;
      rowSs += b[i] * b[i];
      ww += a[i] * a[i];
      ws += a[i] * b[i];
      rowMax = Math.max(rowMax, Math.abs(b[i]));
    }
    ss += rowSs;
    amax = Math.max(amax, rowMax);
    const cond = rowSs > 0 ? rowMax / Math.sqrt(rowSs / cols) : 0;
    if (cond > worst) [worst, worstRow] = [cond, r];
  }
  return {
    rel_rms: ss > 0 ? Math.sqrt(err / ss) : err > 0 ? Infinity : 0,
    cosine: ww > 0 && ss > 0 ? ws / Math.sqrt(ww * ss) : ww === ss ? 1 : 0,
    condition: ss > 0 ? amax / Math.sqrt(ss / (rows * cols)) : 0,
    condition_worst_channel: worst,
    worst_channel: worstRow,
  };
}

export function inspectModel(path: string, against?: string): InspectReport {
  const src = openWeightSource(path);
  const ref = against !== undefined ? openWeightSource(against) : undefined;
  try {
    const tensors: TensorReport[] = [];
    let sourceBytes = 0;
    for (const name of src.names()) {
      const shape = src.shape(name);
      const t: TensorReport = { name, shape, ...bytesOf(src, name) };
      if (ref) {
        // A head stored on its own in a package came from the tied embedding.
        const from = ref.has(name) ? name : name === 'lm_head.weight' ? 'model.embed_tokens.weight' : null;
        if (from === null) t.note = 'not in the source';
        else if (ref.shape(from).join() !== shape.join()) t.note = `source shape [${ref.shape(from)}]`;
        else if (t.format === '?') t.note = `${t.ggml} cannot be decoded`;
        else {
          Object.assign(t, compare(src.load(name), ref.load(from)));
          if (from === name) sourceBytes += bytesOf(ref, from).bytes;
        }
      }
      tensors.push(t);
    }
    const compared = tensors.filter((t) => t.rel_rms !== undefined);
    if (ref && compared.length === 0 && tensors.length > 0) {
      const t = tensors.find((x) => x.note !== undefined) ?? tensors[0];
      throw new LutraError(`--against ${against}: no tensor of ${path} matches it by name and shape (${t.name}: ${t.note ?? 'not compared'}); is it the model this one was made from?`);
    }
    const worst = compared.reduce<TensorReport | undefined>((m, t) => (!m || t.rel_rms! > m.rel_rms! ? t : m), undefined);
    return {
      path,
      kind: src.kind,
      meta: metaOf(src),
      against,
      tensors,
      summary: {
        tensors: tensors.length,
        total_bytes: tensors.reduce((n, t) => n + t.bytes, 0),
        ...(ref && {
          source_bytes: sourceBytes,
          worst_tensor: worst?.name,
          worst_rel_rms: worst?.rel_rms,
          min_cosine: compared.reduce((m, t) => Math.min(m, t.cosine!), 1),
        }),
      },
    };
  } finally {
    src.close();
    ref?.close();
  }
}
