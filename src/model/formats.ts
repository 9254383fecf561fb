// The weight formats in one table, like ggml's type traits. For each kind (f32, f16, bf16, int8,
// int4, lut): how a format is named and parsed, the bytes of a row, the scales or table it keeps
// besides its codes and which rows share them, the shape it needs, the dtype a package stores it
// in, the ggml type that holds the same values, and its row decoder. The loader, quantizer,
// backends, bench, inspect and GGUF import/export read these rules here; only the kernels and the
// quantizers choose their own code per kind. Byte layouts are described in weight.ts.
import { LutraError } from '../util/errors.js';
import type { GgufType } from '../io/gguf.js';
import type { StDtype } from '../io/safetensors.js';
import { matrixShape, type PlainDtype, type WeightFormat, type WeightTensor } from './weight.js';
import { bf16Row, f16Row, f32Row, int4Row, int8Row, lutRow, type RowDecode } from './row-decode.js';

export type { RowDecode };
export type FormatKind = WeightFormat['kind'];
export type FormatOf<K extends FormatKind> = WeightFormat & { kind: K };
export type IntFormat = FormatOf<'int8' | 'int4'>;
/** A ggml tensor type by name, e.g. Q8_0 (the keys of GgufType). */
export type GgmlName = keyof typeof GgufType;

/** The values a quantized format keeps besides its codes. */
export interface AuxKind {
  /** The WeightTensor field that holds them, and the package part `X.<name>`. */
  name: 'scales' | 'table';
  /** What they are called in messages. */
  what: 'scales' | 'table entries';
}

/** Where those values are for one [rows, cols] matrix. */
export interface AuxLayout extends AuxKind {
  /** Values per unit: a row's scales, or one table's 2^b entries. */
  values: number;
  /** Rows sharing a unit: 1 (a row's own scales), G (a LUT group), 0 (one unit for the whole tensor). */
  rowsPerUnit: number;
  units: number;
  /** units × values. */
  count: number;
  /** The shape a package stores them in: scales flat, tables [units, 2^b]. */
  shape: number[];
}

export interface FormatTraits<F extends WeightFormat = WeightFormat> {
  /** f as written in flags and meta.yaml: f16, int4:32, lut4:8. */
  name(f: F): string;
  /** The format `text` (trimmed, lower case) names, or null if not of this kind; `bad` refuses a malformed one. */
  parse(text: string, bad: (problem: string) => never): F | null;
  /** Bytes of `data` per row of `cols` values (every row starts on a byte boundary). */
  rowBytes(f: F, cols: number): number;
  /** The safetensors dtype of `data` in a package: tensor X, or X.codes when there are scales or a table. */
  dtype: StDtype;
  aux:
    | (AuxKind & {
        values(f: F, cols: number): number;
        rowsPerUnit(f: F): number;
        /** Stored as [units, values] rather than flat. */
        perUnitShape: boolean;
      })
    | null;
  /** Why f cannot hold a [rows, cols] matrix (for messages after "…: "), or null. */
  misfit(f: F, rows: number, cols: number): string | null;
  /** The ggml type holding exactly the values of one format of this kind: GGUF export writes that format as it, import reads it as that format. */
  ggml: { type: GgmlName; format: F } | null;
  /**
   * Present for kinds the backends can run with q8 activations: whether f allows it (int: scale
   * blocks of whole blocks of 32, or one scale per row; lut: always, with each table rounded to
   * 7- or 8-bit integers, see backend/reference/q8.ts).
   */
  q8?(f: F): boolean;
  /** Decodes one row of `cols` values of f (row-decode.ts). */
  decoder(f: F, cols: number): RowDecode;
}

function plain<K extends PlainDtype>(kind: K, bytes: number, decoder: (cols: number) => RowDecode, ggml: GgmlName): FormatTraits<FormatOf<K>> {
  return {
    name: () => kind,
    parse: (t) => (t === kind ? ({ kind } as FormatOf<K>) : null),
    rowBytes: (_f, cols) => cols * bytes,
    dtype: kind,
    aux: null,
    misfit: () => null,
    ggml: { type: ggml, format: { kind } as FormatOf<K> },
    decoder: (_f, cols) => decoder(cols),
  };
}

/** Columns sharing one scale: the block size, or the whole row for per-channel and per-tensor scales. */
export function intBlock(f: IntFormat, cols: number): number {
  return typeof f.group === 'number' ? f.group : cols;
}

function int<K extends 'int8' | 'int4'>(
  kind: K,
  rowBytes: (cols: number) => number,
  dtype: StDtype,
  decoder: (cols: number, block: number) => RowDecode,
  ggml: GgmlName,
): FormatTraits<FormatOf<K>> {
  const pattern = new RegExp(`^${kind}:(\\d+|c|t)$`);
  return {
    name: (f) => `${kind}:${f.group}`,
    parse: (t, bad) => {
      const m = pattern.exec(t);
      if (!m) return null;
      const group = m[1] === 'c' || m[1] === 't' ? m[1] : Number(m[1]);
      if (group === 0) bad('the block size must be positive (use :c per channel or :t per tensor)');
      return { kind, group } as FormatOf<K>;
    },
    rowBytes: (_f, cols) => rowBytes(cols),
    dtype,
    aux: {
      name: 'scales',
      what: 'scales',
      values: (f, cols) => cols / intBlock(f, cols),
      rowsPerUnit: (f) => (f.group === 't' ? 0 : 1),
      perUnitShape: false,
    },
    misfit: (f, _rows, cols) => (typeof f.group === 'number' && cols % f.group !== 0 ? `its ${cols} columns are not a multiple of the block size ${f.group}` : null),
    ggml: { type: ggml, format: { kind, group: 32 } as FormatOf<K> },
    q8: (f) => typeof f.group !== 'number' || f.group % 32 === 0,
    decoder: (f, cols) => decoder(cols, intBlock(f, cols)),
  };
}

const LUT: FormatTraits<FormatOf<'lut'>> = {
  name: (f) => `lut${f.bits}:${f.group}`,
  parse: (t) => {
    const m = /^lut([1-8]):(\d+)$/.exec(t);
    return m ? { kind: 'lut', bits: Number(m[1]), group: Number(m[2]) } : null;
  },
  rowBytes: (f, cols) => Math.ceil((cols * f.bits) / 8),
  dtype: 'u8',
  aux: { name: 'table', what: 'table entries', values: (f) => 1 << f.bits, rowsPerUnit: (f) => f.group, perUnitShape: true },
  misfit: (f, rows) => (f.group !== 0 && rows % f.group !== 0 ? `its ${rows} rows are not a multiple of the group size ${f.group}` : null),
  ggml: null,
  q8: () => true,
  decoder: (f, cols) => lutRow(cols, f.bits),
};

const TRAITS: { [K in FormatKind]: FormatTraits<FormatOf<K>> } = {
  f32: plain('f32', 4, f32Row, 'F32'),
  f16: plain('f16', 2, f16Row, 'F16'),
  bf16: plain('bf16', 2, bf16Row, 'BF16'),
  int8: int('int8', (cols) => cols, 'i8', int8Row, 'Q8_0'),
  int4: int('int4', (cols) => Math.ceil(cols / 2), 'u8', int4Row, 'Q4_0'),
  lut: LUT,
};

export const FORMAT_KINDS = Object.keys(TRAITS) as FormatKind[];

/** The traits of f's kind. */
export function formatTraits(f: WeightFormat): FormatTraits {
  return TRAITS[f.kind] as unknown as FormatTraits;
}

export function formatName(f: WeightFormat): string {
  return formatTraits(f).name(f);
}

export function sameFormat(a: WeightFormat, b: WeightFormat): boolean {
  return formatName(a) === formatName(b);
}

/** Parse `f32 f16 bf16 int8:G int4:G lut<b>:G` (G a number, or c/t for int formats). */
export function parseFormat(text: string, where: string): WeightFormat {
  const t = text.trim().toLowerCase();
  const bad = (problem: string): never => {
    throw new LutraError(`${where}: "${text}": ${problem}`);
  };
  for (const kind of FORMAT_KINDS) {
    const f = (TRAITS[kind] as unknown as FormatTraits).parse(t, bad);
    if (f) return f;
  }
  throw new LutraError(`${where}: unknown format "${text}"; expected f32, f16, bf16, int8:G, int4:G (G a number, c or t) or lut<b>:G (b 1..8)`);
}

/** Bytes per row of `data` for a matrix with `cols` columns. */
export function rowBytes(f: WeightFormat, cols: number): number {
  return formatTraits(f).rowBytes(f, cols);
}

/** Values as they are, no scales or table (f32, f16, bf16). */
export function isPlain(f: WeightFormat): f is FormatOf<PlainDtype> {
  return formatTraits(f).aux === null;
}

/** The scales or table of an f matrix [rows, cols], or null for a plain format. */
export function auxLayout(f: WeightFormat, rows: number, cols: number): AuxLayout | null {
  const aux = formatTraits(f).aux;
  if (!aux) return null;
  const values = aux.values(f, cols);
  const rowsPerUnit = aux.rowsPerUnit(f);
  const units = rowsPerUnit === 0 ? 1 : Math.ceil(rows / rowsPerUnit);
  return { name: aux.name, what: aux.what, values, rowsPerUnit, units, count: units * values, shape: aux.perUnitShape ? [units, values] : [units * values] };
}

/** Scales or table entries of an f matrix [rows, cols] in all (0 for plain formats). */
export function auxCount(f: WeightFormat, rows: number, cols: number): number {
  return auxLayout(f, rows, cols)?.count ?? 0;
}

/** The unit (scales of a row, table of a group) that row r uses. */
export function unitOf(aux: AuxLayout, r: number): number {
  return aux.rowsPerUnit === 0 ? 0 : Math.floor(r / aux.rowsPerUnit);
}

/**
 * Rows [r0, r1) of w (any rank: rows are all but the last dimension) as a matrix of their own,
 * sharing w's bytes: one expert of a stacked [E, rows, cols] tensor. A per-tensor scale or table
 * is shared; per-row or per-group ones are cut, so r0 and r1 must fall on unit boundaries.
 */
export function sliceRows(w: WeightTensor, r0: number, r1: number, name: string): WeightTensor {
  const [rows, cols] = matrixShape(w.shape);
  const rb = rowBytes(w.format, cols);
  const out: WeightTensor = { name, shape: [r1 - r0, cols], format: w.format, data: w.data.subarray(r0 * rb, r1 * rb), source: w.source };
  const aux = auxLayout(w.format, rows, cols);
  if (aux) {
    const all = w[aux.name]!;
    if (aux.rowsPerUnit === 0) out[aux.name] = all;
    else {
      if (r0 % aux.rowsPerUnit !== 0 || (r1 % aux.rowsPerUnit !== 0 && r1 !== rows)) {
        throw new LutraError(`tensor "${w.name}" (${formatName(w.format)}): rows ${r0}..${r1} do not fall on its ${aux.rowsPerUnit}-row ${aux.what} groups`);
      }
      out[aux.name] = all.subarray((r0 / aux.rowsPerUnit) * aux.values, Math.ceil(r1 / aux.rowsPerUnit) * aux.values);
    }
  }
  return out;
}

/** Why f cannot hold a [rows, cols] matrix: an int block size must divide the columns, a LUT group the rows. */
export function misfit(f: WeightFormat, rows: number, cols: number): string | null {
  return formatTraits(f).misfit(f, rows, cols);
}

/** Decodes a row of `cols` values of f (see row-decode.ts). */
export function rowDecode(f: WeightFormat, cols: number): RowDecode {
  return formatTraits(f).decoder(f, cols);
}

/** The ggml type holding exactly f's values (F16, Q8_0 for int8:32, …), or null (int8:c, lut…). */
export function ggmlTypeOf(f: WeightFormat): GgmlName | null {
  const g = formatTraits(f).ggml;
  return g && sameFormat(g.format, f) ? g.type : null;
}

/** The format a ggml type is read as without re-encoding (Q8_0 → int8:32), or null. */
export function formatOfGgml(type: string): WeightFormat | null {
  for (const kind of FORMAT_KINDS) {
    const g = TRAITS[kind].ggml;
    if (g?.type === type) return { ...g.format };
  }
  return null;
}
