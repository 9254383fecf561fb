// The GGUF llama.cpp runs for `bench --vs-llama-cpp`: the model itself when it is a .gguf, else an
// export with the very same weights. Only formats ggml stores identically qualify, and only when
// every matrix shares one (exportGguf writes all matrices in one type).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EXACT_EXPORTS, exportGguf, sameValuesExportType } from '../io/gguf-export.js';
import { openWeightSource } from '../io/source.js';
import { formatName, parseFormat } from '../model/formats.js';
import { isGgufPath } from '../io/gguf-source.js';
import { architectureOf } from '../arch/registry.js';
import type { GgufExportType } from '../io/gguf-model.js';
import { LutraError } from '../util/errors.js';

/**
 * Format name of every matrix and expert stack in the model's files (all of them are exported, a
 * stored lm_head too), from the headers only. Routers are left out: the exporter writes them as
 * F32, which holds any lutra format's values exactly.
 */
export function matrixFormats(model: string): Map<string, string> {
  const src = openWeightSource(model);
  try {
    const routers = new Set(architectureOf(src.config).tensors(src.config, src).filter((t) => t.part === 'router').map((t) => t.name));
    return new Map(src.names().filter((n) => src.shape(n).length >= 2 && !routers.has(n)).map((n) => [n, formatName(src.format(n))]));
  } finally {
    src.close();
  }
}

/** The export type for these matrix formats, or a LutraError saying which weights cannot go. */
export function exportTypeFor(formats: Map<string, string>): GgufExportType {
  const byFormat = new Map<string, string[]>();
  for (const [name, f] of formats) byFormat.set(f, [...(byFormat.get(f) ?? []), name]);
  const bad = [...byFormat].filter(([f]) => exportTypeOf(f) === null);
  const pairs = EXACT_EXPORTS.map((e) => `${formatName(e.format)}→${e.type.toUpperCase()}`).join(', ');
  const list = (names: string[]) => (names.length > 2 ? `${names.slice(0, 2).join(', ')} and ${names.length - 2} more` : names.join(', '));
  if (bad.length > 0) {
    const what = bad.map(([f, names]) => `${f} (${list(names)})`).join('; ');
    throw new LutraError(`--vs-llama-cpp: these weights have no identical ggml type, so llama.cpp cannot run the same model: ${what}; exportable: ${pairs} (convert with --quant all=FORMAT)`);
  }
  if (byFormat.size > 1) {
    const what = [...byFormat].map(([f, names]) => `${names.length} × ${f} (e.g. ${names[0]})`).join(', ');
    throw new LutraError(`--vs-llama-cpp: mixed formats cannot be exported as one GGUF type: ${what}; convert with a single --quant all=FORMAT`);
  }
  return exportTypeOf([...byFormat.keys()][0])!;
}

/** The GGUF export type holding a format's values as they are (by the format's name), or null. */
function exportTypeOf(name: string): GgufExportType | null {
  return sameValuesExportType(parseFormat(name, 'bench'));
}

export interface BenchGguf {
  path: string;
  /** ggml type of the matrices, or 'as is' for a .gguf model. */
  type: string;
  /** Remove the temporary export (no-op for a .gguf model). */
  cleanup(): void;
}

export async function ggufFor(model: string, onProgress?: (m: string) => void): Promise<BenchGguf> {
  if (isGgufPath(model)) return { path: model, type: 'as is', cleanup: () => {} };
  const type = exportTypeFor(matrixFormats(model));
  const dir = mkdtempSync(join(tmpdir(), 'lutra-bench-'));
  const path = join(dir, 'model.gguf');
  onProgress?.(`exporting ${type.toUpperCase()} GGUF for llama.cpp`);
  try {
    await exportGguf({ model, out: path, type });
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return { path, type, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
