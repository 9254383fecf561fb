// The lutra package: a folder with meta.yaml, config.json, the tokenizer files, and weights in
// safetensors shards of at most 1 GiB. A quantized tensor X is stored as ordinary tensors
// X.codes (I8 or U8) with X.scales (F16) or X.table (F16); docs/FORMAT.md has the details.
import { existsSync, mkdirSync, readFileSync, writeFileSync, copyFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import YAML from 'yaml';
import { LutraError } from '../util/errors.js';
import { writeOutput } from '../util/atomic-output.js';
import { resolveModelConfig } from '../arch/registry.js';
import type { ModelConfig } from '../arch/config-types.js';
import { matrixShape, numel, type WeightFormat, type WeightTensor } from '../model/weight.js';
import { auxCount, auxLayout, formatName, formatTraits, isPlain, misfit, parseFormat, rowBytes } from '../model/formats.js';
import type { WeightSource } from '../model/forward.js';
import { SafetensorsFile, writeSafetensors, type StDtype, type TensorToWrite } from './safetensors.js';
import { readJsonFile } from './checkpoint.js';
import { parsePlanFormat } from '../quant/plan.js';
import { f16ArrayToF32, f32ArrayToF16 } from '../util/half.js';
import { openRowReader, type FileSpan, type RowReader } from './row-reader.js';

export const PACKAGE_FORMAT_VERSION = 1;
export const MAX_SHARD_BYTES = 2 ** 30;

export interface PackageTensorMeta {
  name: string;
  format: string;
  shape: number[];
  /** Bytes on disk: codes + scales + table. */
  bytes: number;
}

export interface PackageMeta {
  format_version: number;
  model: { name: string; architecture: string };
  source: { path: string; kind: string; sha256: string };
  context_length: number;
  sliding_window: number;
  prefill_batch: number;
  fp16_scale: { alpha: number; chosen_by: string };
  embed_scale: number;
  numerics: string;
  quantization: Record<string, unknown>;
  command: string;
  created_by: string;
  total_bytes: number;
  tensors: PackageTensorMeta[];
}

/**
 * The descriptive fields of meta.yaml (the tensors table and config.json are what a load uses):
 * still refused when they cannot be what convert writes, so a hand-edited file does not mislead.
 */
function checkMetaFields(metaPath: string, meta: PackageMeta): void {
  for (const key of ['context_length', 'sliding_window', 'prefill_batch'] as const) {
    const v = meta[key] as unknown;
    if (v !== undefined && !(Number.isInteger(v) && (v as number) >= 0)) throw new LutraError(`${metaPath}: ${key} is ${JSON.stringify(v)}; expected a whole number`);
  }
  if (meta.embed_scale !== undefined && !(typeof meta.embed_scale === 'number' && Number.isFinite(meta.embed_scale) && meta.embed_scale > 0)) {
    throw new LutraError(`${metaPath}: embed_scale is ${JSON.stringify(meta.embed_scale)}; expected a positive number`);
  }
  const q = meta.quantization as unknown;
  if (q === undefined) return;
  if (typeof q !== 'object' || q === null || Array.isArray(q)) throw new LutraError(`${metaPath}: quantization is ${JSON.stringify(q)}; expected a table of part settings`);
  for (const [key, v] of Object.entries(q as Record<string, unknown>)) {
    if (!key.startsWith('quant_') || v === 'none') continue;
    parsePlanFormat(String(v), `${metaPath}: quantization.${key}`);
  }
}

/** One tensor ready to store: a WeightTensor without its source file. */
export type StoredTensor = Omit<WeightTensor, 'source'>;

/** Bytes a tensor takes in a package, from its shape and format alone (scales and tables in f16). */
export function storedBytes(shape: number[], format: WeightFormat): number {
  const [rows, cols] = matrixShape(shape);
  return rows * rowBytes(format, cols) + 2 * auxCount(format, rows, cols);
}

/** The stored parts of a tensor: the plain tensor, or X.codes (flat) plus X.scales (flat) or X.table [groups, 2^b]. */
function partSpecs(name: string, shape: number[], f: WeightFormat): { name: string; dtype: StDtype; shape: number[] }[] {
  const { dtype } = formatTraits(f);
  const [rows, cols] = matrixShape(shape);
  const aux = auxLayout(f, rows, cols);
  if (!aux) return [{ name, dtype, shape }];
  return [
    { name: `${name}.codes`, dtype, shape: [rows * rowBytes(f, cols)] },
    { name: `${name}.${aux.name}`, dtype: 'f16', shape: aux.shape },
  ];
}

/** Bytes of part i of a made tensor, in the order partSpecs lists them. */
function partBytes(t: StoredTensor, i: number): Uint8Array {
  if (i === 0) return t.data;
  const v = t[formatTraits(t.format).aux!.name]!;
  return new Uint8Array(f32ArrayToF16(v).buffer);
}

export interface PackagePlanEntry {
  name: string;
  shape: number[];
  format: WeightFormat;
  /** Produces the tensor when its shard is written (tensors are made one at a time). */
  make: () => StoredTensor | Promise<StoredTensor>;
  /**
   * Instead of `make`, for a tensor too large to hold whole: its rows in consecutive pieces, each a
   * StoredTensor of some rows in `format` (codes are written as they come; scales or tables are
   * gathered and written after them).
   */
  pieces?: () => AsyncIterable<StoredTensor>;
}

/**
 * The part writers of a tensor made piece by piece, in partSpecs order: the codes (or plain values)
 * as they are made, then the scales or table gathered from the pieces.
 */
function piecewiseParts(e: PackagePlanEntry, started: () => void): TensorToWrite['bytes'][] {
  const aux: Float32Array[] = [];
  const auxName = formatTraits(e.format).aux?.name;
  const codes = async function* () {
    started();
    for await (const p of e.pieces!()) {
      const extra = auxName && p[auxName];
      if (extra) aux.push(extra);
      yield p.data;
    }
  };
  const rest = () => {
    const all = new Float32Array(aux.reduce((n, a) => n + a.length, 0));
    let at = 0;
    for (const a of aux) {
      all.set(a, at);
      at += a.length;
    }
    aux.length = 0;
    return new Uint8Array(f32ArrayToF16(all).buffer);
  };
  return [codes, rest];
}

/**
 * Write a package to `out` via a temporary folder renamed at the end (src/util/atomic-output.ts):
 * `out` must not exist unless opts.force, which replaces it once the new package is complete.
 * `meta` gets its tensor table and total from the entries. `extraFiles` (config, tokenizer files)
 * are copied in: paths, or files given by name and text. Yields to the event loop between tensors.
 */
export async function writePackage(
  out: string,
  meta: Omit<PackageMeta, 'tensors' | 'total_bytes'>,
  config: Record<string, unknown>,
  extraFiles: (string | { name: string; text: string })[],
  entries: PackagePlanEntry[],
  onTensor?: (name: string, index: number, total: number) => void,
  opts: { force?: boolean; forceFlag?: boolean } = {},
): Promise<PackageMeta> {
  return writeOutput(out, { ...opts, flag: '--out', kind: 'dir' }, async (tmp) => {
    mkdirSync(tmp, { recursive: true });
    // Shard assignment from sizes known in advance.
    const shards: PackagePlanEntry[][] = [[]];
    let used = 0;
    for (const e of entries) {
      const b = storedBytes(e.shape, e.format);
      if (used > 0 && used + b > MAX_SHARD_BYTES) {
        shards.push([]);
        used = 0;
      }
      shards[shards.length - 1].push(e);
      used += b;
    }
    const tensors: PackageTensorMeta[] = [];
    const weightMap: Record<string, string> = {};
    let done = 0;
    for (const [si, group] of shards.entries()) {
      const file = `model-${String(si + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`;
      const parts: TensorToWrite[] = [];
      for (const e of group) {
        // Each entry is made lazily when its first part is written, and dropped after its last.
        let made: StoredTensor | null = null;
        const specs = partSpecs(e.name, e.shape, e.format);
        const started = () => {
          onTensor?.(e.name, done++, entries.length);
          tensors.push({ name: e.name, format: formatName(e.format), shape: e.shape, bytes: storedBytes(e.shape, e.format) });
        };
        const piecewise = e.pieces ? piecewiseParts(e, started) : null;
        specs.forEach((spec, i) => {
          weightMap[spec.name] = file;
          parts.push({
            ...spec,
            bytes: piecewise ? piecewise[i] : async () => {
              if (!made) {
                started();
                made = await e.make();
              }
              const b = partBytes(made, i);
              if (i === specs.length - 1) made = null;
              return b;
            },
          });
        });
      }
      await writeSafetensors(join(tmp, file), parts, { format: 'pt', lutra_package: String(PACKAGE_FORMAT_VERSION) });
    }
    writeFileSync(join(tmp, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }, null, 1) + '\n');
    writeFileSync(join(tmp, 'config.json'), JSON.stringify(config, null, 2) + '\n');
    for (const f of extraFiles) {
      if (typeof f === 'string') copyFileSync(f, join(tmp, basename(f)));
      else writeFileSync(join(tmp, f.name), f.text);
    }
    const full: PackageMeta = { ...meta, total_bytes: tensors.reduce((a, t) => a + t.bytes, 0), tensors };
    writeFileSync(join(tmp, 'meta.yaml'), YAML.stringify(full, { lineWidth: 0 }));
    return full;
  });
}

/** A quantized format must fit its tensor's shape (a matrix, or a stack of them, whose columns / rows its groups divide). */
function checkFormatShape(metaPath: string, name: string, shape: number[], f: WeightFormat): void {
  if (shape.length < 2 || misfit(f, ...matrixShape(shape)) !== null) {
    throw new LutraError(`${metaPath}: tensor "${name}" is ${formatName(f)} with shape [${shape}], which that format cannot hold`);
  }
}

export function isPackage(dir: string): boolean {
  return existsSync(join(dir, 'meta.yaml'));
}

/** A package opened for reading: a WeightSource like a checkpoint. */
export class PackageSource implements WeightSource {
  readonly config: ModelConfig;
  readonly rawConfig: Record<string, unknown>;
  readonly meta: PackageMeta;
  readonly embedScale: number | undefined;
  readonly numerics: string | undefined;
  readonly separateLmHead = true;
  private files = new Map<string, SafetensorsFile>();
  private shardOf = new Map<string, SafetensorsFile>();
  private formats = new Map<string, PackageTensorMeta & { parsed: WeightFormat }>();

  constructor(readonly dir: string) {
    const metaPath = join(dir, 'meta.yaml');
    let meta: PackageMeta;
    try {
      meta = YAML.parse(readFileSync(metaPath, 'utf8'));
    } catch (e) {
      throw new LutraError(`${metaPath}: not readable YAML (${(e as Error).message.split('\n')[0]})`);
    }
    if (!meta || typeof meta !== 'object' || !Array.isArray(meta.tensors)) throw new LutraError(`${metaPath}: no "tensors" table; not a lutra package`);
    if (meta.format_version !== PACKAGE_FORMAT_VERSION) {
      throw new LutraError(`${metaPath}: format_version ${meta.format_version}; this lutra reads version ${PACKAGE_FORMAT_VERSION}`);
    }
    checkMetaFields(metaPath, meta);
    this.meta = meta;
    this.embedScale = typeof meta.embed_scale === 'number' ? meta.embed_scale : undefined;
    this.numerics = typeof meta.numerics === 'string' ? meta.numerics : undefined;
    const configPath = join(dir, 'config.json');
    this.rawConfig = readJsonFile(configPath, 'the model config');
    this.config = resolveModelConfig(this.rawConfig, configPath);
    const indexPath = join(dir, 'model.safetensors.index.json');
    const index = readJsonFile(indexPath, 'the shard index');
    const map = index.weight_map as Record<string, string>;
    for (const shard of new Set(Object.values(map ?? {}))) {
      const f = SafetensorsFile.open(join(dir, shard));
      this.files.set(shard, f);
    }
    for (const [name, shard] of Object.entries(map ?? {})) this.shardOf.set(name, this.files.get(shard)!);
    meta.tensors.forEach((t, i) => {
      if (!t || typeof t !== 'object' || typeof t.name !== 'string' || typeof t.format !== 'string') {
        throw new LutraError(`${metaPath}: tensors[${i}] is ${JSON.stringify(t)}; expected an entry with a name, a format and a shape`);
      }
      const matrix = Array.isArray(t.shape) && t.shape.every((d) => Number.isInteger(d) && d > 0);
      if (!matrix || t.shape.length < 1 || t.shape.length > 3) {
        throw new LutraError(`${metaPath}: tensor "${t.name}" has shape ${JSON.stringify(t.shape)}; expected [n], [rows, cols] or [experts, rows, cols] of positive integers`);
      }
      const parsed = parseFormat(String(t.format), `${metaPath}: tensor "${t.name}"`);
      if (!isPlain(parsed)) checkFormatShape(metaPath, t.name, t.shape, parsed);
      // Every stored part must have the size its format and shape imply (header only).
      for (const spec of partSpecs(t.name, t.shape, parsed)) {
        const f = this.shardOf.get(spec.name);
        const e = f?.entries.get(spec.name);
        if (!f || !e) throw new LutraError(`${metaPath}: lists tensor "${t.name}" but no shard holds "${spec.name}"`);
        if (e.dtype !== spec.dtype || numel(e.shape) !== numel(spec.shape)) {
          throw new LutraError(
            `${f.path}: tensor "${spec.name}" is ${e.dtype.toUpperCase()} [${e.shape}]; ${formatName(parsed)} of [${t.shape}] (meta.yaml) needs ${spec.dtype.toUpperCase()} with ${numel(spec.shape)} values`,
          );
        }
      }
      this.formats.set(t.name, { ...t, parsed });
    });
  }

  has(name: string): boolean {
    return this.formats.has(name);
  }

  names(): string[] {
    return [...this.formats.keys()];
  }

  /** Shapes come from meta.yaml's tensor table. */
  where(): string {
    return join(this.dir, 'meta.yaml');
  }

  shape(name: string): number[] {
    const t = this.formats.get(name);
    if (!t) throw new LutraError(`${this.dir}: package has no tensor "${name}"`);
    return t.shape;
  }

  format(name: string): WeightFormat {
    const t = this.formats.get(name);
    if (!t) throw new LutraError(`${this.dir}: package has no tensor "${name}"`);
    return t.parsed;
  }

  private read(name: string): { data: Uint8Array; dtype: StDtype; path: string } {
    const f = this.shardOf.get(name)!;
    return { data: f.read(name), dtype: f.entries.get(name)!.dtype, path: f.path };
  }

  private floats(name: string): Float32Array {
    const { data, dtype } = this.read(name);
    if (dtype === 'f16') return f16ArrayToF32(new Uint16Array(data.buffer, data.byteOffset, data.byteLength / 2));
    if (dtype === 'f32') return new Float32Array(data.buffer, data.byteOffset, data.byteLength / 4);
    throw new LutraError(`${this.dir}: "${name}" is ${dtype}, expected F16 or F32`);
  }

  load(name: string, expected?: number[]): WeightTensor {
    const t = this.formats.get(name);
    if (!t) throw new LutraError(`${this.dir}: tensor "${name}" is missing from the package`);
    if (expected && (expected.length !== t.shape.length || expected.some((d, i) => d !== t.shape[i]))) {
      throw new LutraError(`${join(this.dir, 'meta.yaml')}: tensor "${name}" has shape [${t.shape}], expected [${expected}] from config.json`);
    }
    const f = t.parsed;
    if (isPlain(f)) {
      const { data, dtype, path } = this.read(name);
      if (dtype !== f.kind) throw new LutraError(`${path}: tensor "${name}" is stored as ${dtype} but meta.yaml says ${f.kind}`);
      return { name, shape: t.shape, format: f, data, source: path };
    }
    const codes = this.read(`${name}.codes`);
    const [rows, cols] = matrixShape(t.shape);
    if (codes.data.byteLength !== rows * rowBytes(f, cols)) {
      throw new LutraError(`${codes.path}: "${name}.codes" has ${codes.data.byteLength} bytes; ${formatName(f)} of [${t.shape}] needs ${rows * rowBytes(f, cols)}`);
    }
    const aux = formatTraits(f).aux!.name;
    return { name, shape: t.shape, format: f, data: codes.data, source: codes.path, [aux]: this.floats(`${name}.${aux}`) };
  }

  /** Where a stored part is: its shard, byte span and dtype. */
  private span(part: string): FileSpan & { dtype: StDtype } {
    const f = this.shardOf.get(part)!;
    const e = f.entries.get(part)!;
    return { path: f.path, offset: e.offset, nbytes: e.nbytes, dtype: e.dtype };
  }

  /**
   * Rows of a 2-D tensor read from its shard on demand: per row its codes and only its scales
   * (int formats) or its table row (lut). The reader has its own descriptors and outlives close().
   */
  rowReader(name: string): RowReader {
    const t = this.formats.get(name);
    if (!t) throw new LutraError(`${join(this.dir, 'meta.yaml')}: package has no tensor "${name}"; cannot read its rows`);
    if (t.shape.length !== 2) throw new LutraError(`${join(this.dir, 'meta.yaml')}: tensor "${name}" has shape [${t.shape}]; reading rows needs a 2-D matrix`);
    const [rows, cols] = t.shape;
    const f = t.parsed;
    if (isPlain(f)) {
      const data = this.span(name);
      if (data.dtype !== f.kind) throw new LutraError(`${data.path}: tensor "${name}" is stored as ${data.dtype} but meta.yaml says ${f.kind}`);
      return openRowReader({ name, rows, cols, format: f, layout: { kind: 'lutra', data } });
    }
    const codes = this.span(`${name}.codes`);
    const part = `${name}.${formatTraits(f).aux!.name}`;
    const aux = this.span(part);
    if (aux.dtype !== 'f16' && aux.dtype !== 'f32') throw new LutraError(`${aux.path}: "${part}" is ${aux.dtype}, expected F16 or F32`);
    return openRowReader({ name, rows, cols, format: f, layout: { kind: 'lutra', data: codes, aux: { ...aux, dtype: aux.dtype } } });
  }

  weightFiles(): string[] {
    return [...this.files.values()].map((f) => f.path);
  }

  close(): void {
    for (const f of this.files.values()) f.close();
    this.files.clear();
  }
}

export { numel };
