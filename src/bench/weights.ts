// Weight bytes a decode step reads, from the formats of the weights the model actually loaded
// (not the file size: a file may hold extra tensors, and packages store scales differently).
import { openWeightSource } from '../io/source.js';
import type { CausalLM } from '../model/forward.js';
import { architectureOf } from '../arch/registry.js';
import { matrixShape, type WeightFormat } from '../model/weight.js';
import { auxCount, formatName, rowBytes } from '../model/formats.js';

/** Bytes of one [rows, cols] matrix as the backends hold it: codes plus f32 scales or tables. */
export function matrixBytes(format: WeightFormat, rows: number, cols: number): number {
  return rows * rowBytes(format, cols) + 4 * auxCount(format, rows, cols);
}

export interface WeightBytes {
  /**
   * Bytes read per decoded token: every matrix once (a tied embedding once, as the LM head; of
   * stacked experts the top-k chosen) plus the f32 norm gains.
   */
  perToken: number;
  /** Every weight held in memory (adds the embedding when the LM head is separate). */
  resident: number;
  /** Tables read row by row from disk and never held (Gemma 4's per-layer embeddings). */
  onDisk: number;
  /** Weights (elements) read per decoded token, counted as `perToken`: the active parameters. */
  paramsPerToken: number;
  /** Weights held in memory (elements), counted as `resident`. */
  paramsResident: number;
  /** Matrix bytes as held, by the file's format name, e.g. { 'int4:32': ..., f16: ... } (embedding/LM head included). */
  byFormat: Record<string, number>;
  /** Matrix name → format name, for export decisions. */
  formats: Map<string, string>;
}

/** `dir` is the folder/file `model` was loaded from (its formats are read from the header only). */
export function weightBytes(dir: string, model: CausalLM): WeightBytes {
  const src = openWeightSource(dir);
  try {
    const byFormat: Record<string, number> = {};
    const formats = new Map<string, string>();
    let perToken = 0;
    let resident = 0;
    let onDisk = 0;
    let paramsPerToken = 0;
    let paramsResident = 0;
    const diskTables = new Set(model.diskTables ?? []);
    for (const t of architectureOf(model.cfg).tensors(model.cfg, src)) {
      if (t.shape.length === 1) {
        // Gains and scalars are expanded to f32 at load.
        perToken += 4 * t.shape[0];
        resident += 4 * t.shape[0];
        paramsPerToken += t.shape[0];
        paramsResident += t.shape[0];
        continue;
      }
      const [rows, cols] = matrixShape(t.shape);
      const f = src.format(t.name);
      const fname = formatName(f);
      formats.set(t.name, fname);
      // Read from the file as stored, or as the backend holds it (the wasm backend repacks LUT codes).
      const b = matrixBytes(diskTables.has(t.name) ? f : (model.backend.heldFormat?.(f) ?? f), rows, cols);
      byFormat[fname] = (byFormat[fname] ?? 0) + b;
      if (diskTables.has(t.name)) {
        onDisk += b;
        continue;
      }
      resident += b;
      paramsResident += rows * cols;
      // A tied embedding is read once per token, as the LM head; a separate one only for the token's row.
      if (t.part !== 'embed' || !model.separateHead) {
        perToken += b * (t.readPerToken ?? 1);
        paramsPerToken += rows * cols * (t.readPerToken ?? 1);
      }
    }
    return { perToken, resident, onDisk, paramsPerToken, paramsResident, byFormat, formats };
  } finally {
    src.close();
  }
}
