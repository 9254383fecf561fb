// Conversion: read a source model, give every tensor its planned format, and write a package.
import { createHash } from 'node:crypto';
import { existsSync, openSync, readSync, closeSync } from 'node:fs';
import { basename, join } from 'node:path';
import { openWeightSource, type OpenedSource } from '../io/source.js';
import { writePackage, PACKAGE_FORMAT_VERSION, type PackageMeta, type PackagePlanEntry, type StoredTensor } from '../io/package.js';
import { matrixShape, type WeightFormat, type WeightTensor } from '../model/weight.js';
import { auxLayout, isPlain, rowBytes, sameFormat, type FormatKind, type FormatOf, type IntFormat } from '../model/formats.js';
import { dequantize } from '../backend/reference/index.js';
import { checkFormatFits, formatFor, perMatrixRows, planFields, type QuantPlan } from './plan.js';
import { architectureOf } from '../arch/registry.js';
import { assertFinite, checkTensorShapes } from '../model/checks.js';
import { quantizeLinear, quantizeLinearPerMatrix } from './linear.js';
import { quantizeLut } from './lut.js';
import { f32ArrayToBf16, f32ArrayToF16 } from '../util/half.js';
import { embedScaleFor } from '../model/forward.js';
import { scaleForFp16 } from '../fp16/scale.js';
import { LutraError } from '../util/errors.js';
import { ggufTokenizerParts } from '../tokenizer/gguf-tokenizer.js';
import { GgufSource } from '../io/gguf-source.js';
import { yieldToEvents } from '../util/atomic-output.js';
import { dequantizeInPieces, pieceRows, rowPieces, PIECE_WEIGHTS, STREAM_WEIGHTS } from './pieces.js';
import { loraDelta, readLoraAdapter, type LoraUse } from '../adapters/lora.js';

export interface ConvertOptions {
  src: string;
  out: string;
  plan: QuantPlan;
  /** The command line, recorded in meta.yaml. */
  command: string;
  prefillBatch?: number;
  /** Folder to copy the tokenizer files from (default: the source folder; a GGUF has none). */
  tokenizer?: string;
  onTensor?: (name: string, index: number, total: number) => void;
  /** FP16 residual scale α (1 = none) and how it was chosen, recorded in meta.yaml. */
  fp16Scale?: { alpha: number; chosenBy: string };
  /** The numerics the package is built for (a --numerics spec), recorded in meta.yaml; default f32. */
  numerics?: string;
  /** Replace an existing `out` (atomically, once the new package is complete). */
  force?: boolean;
  /** Tensors with more weights are made a piece of rows at a time (default STREAM_WEIGHTS; tests lower it). */
  streamWeights?: number;
  /** LoRA adapters (folder, weight) merged into the weights before they are encoded: W + Σ wᵢ·sᵢ·BᵢAᵢ in f32. */
  lora?: readonly { dir: string; weight: number }[];
}

export const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja', 'special_tokens_map.json', 'generation_config.json'];

/** Codes (or values) and scales or table of one format: a StoredTensor without its name and shape. */
type Encoded = Pick<StoredTensor, 'data' | 'scales' | 'table'>;
/** Encodes f32 values [rows, cols] in f (`tensor` names it in messages). */
type Encoder<F extends WeightFormat> = (x: Float32Array, rows: number, cols: number, f: F, tensor: string) => Encoded;

/** The encoder of each kind: plain values converted, int8/int4 quantized linearly, lut palettized. */
const ENCODERS: { [K in FormatKind]: Encoder<FormatOf<K>> } = {
  f32: (x) => ({ data: new Uint8Array(x.buffer, x.byteOffset, x.byteLength) }),
  f16: (x) => ({ data: new Uint8Array(f32ArrayToF16(x).buffer) }),
  bf16: (x) => ({ data: new Uint8Array(f32ArrayToBf16(x).buffer) }),
  int8: linear,
  int4: linear,
  lut: (x, rows, cols, f, tensor) => {
    const q = quantizeLut(x, rows, cols, f.bits, f.group, tensor);
    return { data: q.codes, table: q.table };
  },
};

function linear(x: Float32Array, rows: number, cols: number, f: IntFormat, tensor: string): Encoded {
  const q = quantizeLinear(x, rows, cols, f, tensor);
  return { data: q.codes, scales: q.scales };
}

const encodeValues: Encoder<WeightFormat> = (x, rows, cols, f, tensor) => (ENCODERS[f.kind] as Encoder<WeightFormat>)(x, rows, cols, f, tensor);

/**
 * Encode `x` [rows, cols] in `target`; with `matrixRows` (an int8/int4 per-channel target), one
 * scale per `matrixRows`-row matrix of a stack instead of one per row (int8:e / int4:e).
 */
function encodeRows(x: Float32Array, rows: number, cols: number, target: WeightFormat, name: string, matrixRows?: number): Encoded {
  if (matrixRows === undefined) return encodeValues(x, rows, cols, target, name);
  if (target.kind !== 'int8' && target.kind !== 'int4') throw new LutraError(`tensor "${name}": one scale per matrix needs int8 or int4, not ${target.kind}`);
  const q = quantizeLinearPerMatrix(x, rows, cols, target, matrixRows, name);
  return { data: q.codes, scales: q.scales };
}

/** Encode a tensor in `target` (a no-op when it already is, unless `matrixRows` asks for one scale per matrix). */
export function encodeTensor(w: WeightTensor, target: WeightFormat, matrixRows?: number): StoredTensor {
  const base = { name: w.name, shape: w.shape, format: target };
  if (sameFormat(w.format, target) && matrixRows === undefined) return { ...base, data: w.data, scales: w.scales, table: w.table };
  const [rows, cols] = matrixShape(w.shape);
  return { ...base, ...encodeRows(dequantize(w), rows, cols, target, w.name, matrixRows) };
}

/**
 * encodeTensor, yielding to the event loop during long work so a signal is handled: a large
 * tensor is decoded a piece of rows at a time, and one whose scales or tables belong to single rows
 * or groups of rows (int8/int4 except per tensor, lut<b>:G with G > 0) is encoded a few whole units
 * at a time. Units are independent, so the bytes are those of encodeTensor.
 */
export async function encodeTensorAsync(w: WeightTensor, target: WeightFormat, matrixRows?: number): Promise<StoredTensor> {
  const [rows, cols] = matrixShape(w.shape);
  if (rows * cols <= PIECE_WEIGHTS || (sameFormat(w.format, target) && matrixRows === undefined)) return encodeTensor(w, target, matrixRows);
  // A large tensor: decoded a piece at a time, then encoded (in pieces of whole units where it can be).
  const x = await dequantizeInPieces(w);
  await yieldToEvents();
  const f32: WeightTensor = { ...w, format: { kind: 'f32' }, data: new Uint8Array(x.buffer), scales: undefined, table: undefined };
  const aux = auxLayout(target, rows, cols);
  // Rows sharing what is computed from their values: a scale or table unit, or a whole matrix of the stack.
  const unitRows = matrixRows ?? aux?.rowsPerUnit ?? 0;
  if (!aux || unitRows === 0 || rows % unitRows !== 0) return encodeTensor(f32, target, matrixRows);
  const stride = rowBytes(target, cols);
  const codes = new Uint8Array(rows * stride);
  const values = new Float32Array(aux.count);
  const step = pieceRows(cols, unitRows);
  for (let r0 = 0; r0 < rows; r0 += step) {
    const n = Math.min(step, rows - r0);
    const q = encodeRows(x.subarray(r0 * cols, (r0 + n) * cols), n, cols, target, w.name, matrixRows);
    codes.set(q.data, r0 * stride);
    values.set(q[aux.name]!, (r0 / aux.rowsPerUnit) * aux.values);
    await yieldToEvents();
  }
  return { name: w.name, shape: w.shape, format: target, data: codes, [aux.name]: values };
}

/** `w` with the adapters' change added, as f32 (encoded afterwards in the planned format). */
function mergeLora(w: WeightTensor, uses: readonly LoraUse[]): WeightTensor {
  const x = dequantize(w);
  const delta = loraDelta(uses, w.name);
  if (delta) for (let i = 0; i < x.length; i++) x[i] += delta[i];
  return { ...w, format: { kind: 'f32' }, data: new Uint8Array(x.buffer, x.byteOffset, x.byteLength), scales: undefined, table: undefined };
}

/** Whether rows can be encoded a piece at a time: no scale or table shared by the whole tensor. */
function rowsIndependent(target: WeightFormat): boolean {
  return (auxLayout(target, 1, 1)?.rowsPerUnit ?? 1) !== 0;
}

/**
 * A large tensor in `target`, a piece of rows at a time: rows are read from the file as f32 (any
 * source format), scanned for NaN/Inf and encoded, so neither the source nor the output is ever one
 * array (a table over 4 GiB cannot be).
 */
async function* encodeRowsFromDisk(src: OpenedSource, name: string, target: WeightFormat): AsyncIterable<StoredTensor> {
  for await (const { n, x } of rowPieces(src.rowReader!(name), Math.max(1, auxLayout(target, 1, 1)?.rowsPerUnit ?? 1))) {
    const cols = x.length / n;
    const f32: WeightTensor = { name, shape: [n, cols], format: { kind: 'f32' }, data: new Uint8Array(x.buffer, x.byteOffset, x.byteLength), source: src.dir };
    const enc = encodeTensor(assertFinite(f32), target);
    // Plain outputs may view the reused buffer: copy before the next piece overwrites it.
    yield { ...enc, shape: [n, cols], data: enc.data.buffer === x.buffer ? enc.data.slice() : enc.data };
  }
}

async function sha256Files(files: string[]): Promise<string> {
  const h = createHash('sha256');
  const buf = Buffer.allocUnsafe(1 << 24);
  for (const f of files) {
    const fd = openSync(f, 'r');
    try {
      for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0; ) {
        h.update(buf.subarray(0, n));
        await yieldToEvents();
      }
    } finally {
      closeSync(fd);
    }
  }
  return h.digest('hex');
}

/**
 * Every tensor of the source with the format it gets, checked before any weight is read: shapes
 * against the config, and each planned format against its tensor's shape. Weights are scanned for
 * NaN/Inf as they are read.
 */
function planEntries(
  src: OpenedSource,
  plan: QuantPlan,
  alpha: number,
  streamWeights = STREAM_WEIGHTS,
  lora: readonly { dir: string; weight: number }[] = [],
): PackagePlanEntry[] {
  const arch = architectureOf(src.config);
  const manifest = arch.tensors(src.config, src);
  checkTensorShapes(manifest, src);
  const adapters: LoraUse[] = lora.map((l) => ({ adapter: readLoraAdapter(l.dir, manifest), weight: l.weight }));
  const adapted = new Set(adapters.flatMap((u) => [...u.adapter.modules.keys()]));
  const partOf = new Map(manifest.map((t) => [t.name, t.part]));
  partOf.set('lm_head.weight', 'lmhead');
  const load = (name: string) => (adapted.has(name) ? mergeLora(assertFinite(src.load(name)), adapters) : assertFinite(src.load(name)));
  const entries: PackagePlanEntry[] = [];
  // What the model reads (a checkpoint may hold more, e.g. K/V projections of layers that share another layer's cache).
  for (const name of src.names().filter((n) => partOf.has(n))) {
    const shape = src.shape(name);
    const rule = alpha !== 1 ? arch.fp16ScaleRule(name) : null;
    const planned = formatFor(plan, partOf.get(name)!, shape);
    if (planned) checkFormatFits(plan, name, partOf.get(name)!, shape, planned, src.dir);
    const matrixRows = perMatrixRows(plan, partOf.get(name)!, shape);
    // A scaled gain is kept in f32 (exact); a scaled matrix keeps its planned format.
    const format = rule && shape.length === 1 ? ({ kind: 'f32' } as const) : (planned ?? (rule ? { kind: 'f32' as const } : src.format(name)));
    const make = () => encodeTensorAsync(rule ? scaleForFp16(load(name), rule, alpha) : load(name), format, matrixRows);
    // A quantized tensor already in its format is copied as it is (re-encoding could move codes).
    const copy = sameFormat(src.format(name), format) && !isPlain(format) && matrixRows === undefined && !adapted.has(name);
    const stream =
      shape.length === 2 && shape[0] * shape[1] > streamWeights && !rule && !copy && src.rowReader && rowsIndependent(format) && matrixRows === undefined && !adapted.has(name);
    entries.push({ name, shape, format, make, pieces: stream ? () => encodeRowsFromDisk(src, name, format) : undefined });
  }
  // A tied head in a format other than the embedding's is stored on its own.
  if (!src.has('lm_head.weight')) {
    const embed = entries.find((e) => e.name === 'model.embed_tokens.weight')!;
    const planned = formatFor(plan, 'lmhead', embed.shape);
    if (planned) checkFormatFits(plan, 'lm_head.weight', 'lmhead', embed.shape, planned, `${src.dir} (the tied embedding)`);
    const head = planned ?? src.format('model.embed_tokens.weight');
    const headRows = perMatrixRows(plan, 'lmhead', embed.shape);
    if (!sameFormat(head, embed.format) || headRows !== perMatrixRows(plan, 'embed', embed.shape)) {
      entries.push({ name: 'lm_head.weight', shape: embed.shape, format: head, make: () => encodeTensorAsync({ ...load('model.embed_tokens.weight'), name: 'lm_head.weight' }, head, headRows) });
    }
  }
  return entries;
}

/** Open the source and check the plan against it (what convert does first), reading no weight. */
export function checkConvertPlan(srcPath: string, plan: QuantPlan, lora?: readonly { dir: string; weight: number }[]): void {
  const src = openWeightSource(srcPath);
  try {
    planEntries(src, plan, 1, STREAM_WEIGHTS, lora);
  } finally {
    src.close();
  }
}

/**
 * Convert `opts.src` into a package at `opts.out` (refused if it exists, unless opts.force: then
 * replaced once the new package is complete). Yields to the event loop between tensors.
 */
export async function convert(opts: ConvertOptions): Promise<PackageMeta> {
  // Checked again when the package is put in place: another run may write `out` meanwhile.
  if (!opts.force && existsSync(opts.out)) throw new LutraError(`--out ${opts.out}: already exists; choose a new path or pass --force to replace it`);
  const src = openWeightSource(opts.src);
  try {
    const cfg = src.config;
    const alpha = opts.fp16Scale?.alpha ?? 1;
    const entries = planEntries(src, opts.plan, alpha, opts.streamWeights, opts.lora);
    const meta: Omit<PackageMeta, 'tensors' | 'total_bytes'> = {
      format_version: PACKAGE_FORMAT_VERSION,
      model: { name: basename(opts.src.replace(/\/+$/, '')), architecture: cfg.modelType },
      source: { path: opts.src, kind: src.kind, sha256: await sha256Files(src.weightFiles()) },
      context_length: cfg.maxPositions,
      sliding_window: cfg.slidingWindow,
      prefill_batch: opts.prefillBatch ?? 64,
      fp16_scale: { alpha, chosen_by: opts.fp16Scale?.chosenBy ?? 'none' },
      embed_scale: alpha * (src.embedScale ?? embedScaleFor(cfg.hiddenSize, src.format('model.embed_tokens.weight').kind)),
      numerics: opts.numerics ?? 'f32',
      quantization: planFields(opts.plan),
      command: opts.command,
      created_by: 'lutra',
    };
    const tokDir = opts.tokenizer ?? opts.src;
    if (opts.tokenizer !== undefined && !existsSync(join(tokDir, 'tokenizer.json'))) {
      throw new LutraError(`--tokenizer ${tokDir}: no tokenizer.json there`);
    }
    const extra: (string | { name: string; text: string })[] = TOKENIZER_FILES.map((f) => join(tokDir, f)).filter((f) => existsSync(f));
    if (src instanceof GgufSource && opts.tokenizer === undefined && src.file.metadata.has('tokenizer.ggml.tokens')) {
      // A GGUF carries its tokenizer as metadata: the package gets it as tokenizer.json (and the
      // chat template in tokenizer_config.json), as lutra reads it when it runs the GGUF itself.
      const parts = ggufTokenizerParts(src.file, cfg.vocabSize);
      extra.push({ name: 'tokenizer.json', text: JSON.stringify(parts.tokenizerJson) }, { name: 'tokenizer_config.json', text: JSON.stringify(parts.tokenizerConfig, null, 1) + '\n' });
    }
    return await writePackage(opts.out, meta, src.rawConfig, extra, entries, opts.onTensor, { force: opts.force, forceFlag: true });
  } finally {
    src.close();
  }
}
