// Export any model source (checkpoint, lutra package, GGUF) to a llama.cpp-loadable GGUF of its
// architecture.
// A package's int8:32 / int4:32 tensors go out as Q8_0 / Q4_0 blocks byte for byte when the
// export type is q8_0 / q4_0 (the values are the same; see gguf-blocks.ts); everything else is
// dequantized and encoded in the export type.
import { existsSync } from 'node:fs';
import { basename, join } from 'node:path';
import { LutraError } from '../util/errors.js';
import { readJsonFile } from './checkpoint.js';
import { openWeightSource, type OpenedSource } from './source.js';
import { EXPORT_TYPES, exportModelGguf, MATRIX_TYPE, type GgufExportType } from './gguf-model.js';
import { architectureOf } from '../arch/registry.js';
import { GgufType, ggufTypeName } from './gguf.js';
import { int4ToQ4_0, int8ToQ8_0 } from './gguf-blocks.js';
import { dequantizeInPieces, rowPieces } from '../quant/pieces.js';
import type { RowReader } from './row-reader.js';
import type { WeightFormat, WeightTensor } from '../model/weight.js';
import { formatOfGgml, ggmlTypeOf, sameFormat } from '../model/formats.js';

export interface ExportGgufOptions {
  model: string;
  out: string;
  type: GgufExportType;
  /** Folder with tokenizer.json / tokenizer_config.json (default: the model folder). */
  tokenizer?: string;
  /** Called with the opened source before writing (warnings about llama.cpp differences). */
  onOpen?: (src: OpenedSource) => void;
  onProgress?: (done: number, total: number) => void;
  /** Replace an existing `out` once the new file is complete; without it an existing `out` is refused. */
  force?: boolean;
  /** Tensors with more weights are read and written a piece of rows at a time (tests lower it). */
  streamWeights?: number;
}

async function* f32Pieces(reader: RowReader): AsyncIterable<Float32Array> {
  for await (const { x } of rowPieces(reader)) yield x;
}

/** Whether a tensor in `f` can be written as ggml `type` without re-encoding. */
export function mapsExactly(f: WeightFormat, type: number): boolean {
  return ggmlTypeOf(f) === ggufTypeName(type);
}

/** Per export type, the lutra format whose values it holds as they are (f32, f16, int8:32, int4:32). */
export const EXACT_EXPORTS = EXPORT_TYPES.map((type) => ({ type, format: formatOfGgml(ggufTypeName(MATRIX_TYPE[type]))! }));

/** The export type that writes `f`'s values as they are, or null (bf16: lutra writes no BF16; int8:c, lut…: no ggml type). */
export function sameValuesExportType(f: WeightFormat): GgufExportType | null {
  return EXACT_EXPORTS.find((e) => sameFormat(e.format, f))?.type ?? null;
}

/** The tensor's bytes as ggml `type`, for a format that mapsExactly onto it. */
export function exactGgmlBytes(w: WeightTensor, type: number): Uint8Array {
  if (type === GgufType.Q8_0) return int8ToQ8_0(w);
  if (type === GgufType.Q4_0) return int4ToQ4_0(w);
  return w.data;
}

export async function exportGguf(opts: ExportGgufOptions): Promise<void> {
  if (!opts.force && existsSync(opts.out)) throw new LutraError(`--out ${opts.out}: already exists; choose a new path or pass --force to replace it`);
  const src = openWeightSource(opts.model);
  try {
    opts.onOpen?.(src);
    const tokDir = opts.tokenizer ?? opts.model;
    const tokenizerJson = readJsonFile(join(tokDir, 'tokenizer.json'), 'the tokenizer (a GGUF needs one; pass --tokenizer DIR)');
    const tokenizerConfig = readJsonFile(join(tokDir, 'tokenizer_config.json'), 'the tokenizer config');
    const tensors = src.names().map((hfName) => ({
      hfName,
      shape: src.shape(hfName),
      load: () => dequantizeInPieces(src.load(hfName)),
      exact: (type: GgufType) => (mapsExactly(src.format(hfName), type) ? exactGgmlBytes(src.load(hfName), type) : undefined),
      pieces: src.rowReader && src.shape(hfName).length === 2 ? () => f32Pieces(src.rowReader!(hfName)) : undefined,
    }));
    await exportModelGguf({
      out: opts.out,
      arch: architectureOf(src.config),
      cfg: src.config,
      tokenizerJson,
      tokenizerConfig,
      name: basename(opts.model.replace(/\/+$/, '')),
      type: opts.type,
      separateLmHead: src.kind === 'package' || src.kind === 'gguf',
      tensors,
      onProgress: opts.onProgress,
      force: opts.force ?? false,
      flag: '--out',
      streamWeights: opts.streamWeights,
    });
  } finally {
    src.close();
  }
}
