// prepare(): copy a weight's bytes (and scales or table) into the arena once, and write the
// descriptor the kernels read (kernels/matrix.ts has the same layout). A LUT weight under q8
// activations also gets its tables rounded to integers (lutQ8Tables) and a scale per row; lut5..8
// then become int8 per row outright ("repacked": each code replaced by its table's int8 value, a
// byte a weight, and the int8 kernels run them). lut8 keeps its size so; lut5..7 grow to 8 bits a
// weight, and run at int8's speed instead of about half of it through their own kernels (a 32- to
// 128-entry lookup costs more than the dot product: docs/EXPERIMENTS.md LK8, LK11). lut1..3 are
// repacked into lut4's nibbles, and run by its kernels (about 2× faster than their bitstream
// unpacking: LK12). With repack off they all stay packed, lut5..7 in the planar layout their
// kernels read.
import type { Matrix } from '../backend.js';
import type { WeightFormat, WeightTensor } from '../../model/weight.js';
import { auxLayout, formatName, intBlock, rowBytes, unitOf } from '../../model/formats.js';
import { LutraError } from '../../util/errors.js';
import type { Arena } from './arena.js';
import type { Kernels } from './kernels.js';
import { lutQ8Tables, usesQ8 } from '../reference/q8.js';

export interface WasmMatrix extends Matrix {
  /** Address of the descriptor. */
  readonly desc: number;
  /** Bytes of weight data (codes + scales/table), for bandwidth figures. */
  readonly bytes: number;
  /** matmul quantizes activations to q8 (see usesQ8). */
  readonly q8: boolean;
  /** The memory holding it (0: the main one; see WasmBackend). */
  readonly mem: number;
}

const FORMAT_CODE = { f32: 0, f16: 1, bf16: 2, int8: 3, int4: 4, lut: 5 } as const;
const DESC_BYTES = 64;

/** The kernels prepare() runs on LUT codes (in the memory the weight goes to). */
export type LutKernels = Pick<Kernels, 'lutToPlanar' | 'lutToInt8' | 'lutToNibbles'>;

/** How prepareMatrix holds weights: q8 activations (usesQ8 decides per format), LUT codes repacked. */
export interface HoldOptions {
  q8: boolean;
  repack: boolean;
}

/**
 * The format a weight of format f is held and read in after prepareMatrix: under q8 activations
 * lut8 as int8 per row, and with repack lut5..7 too, and lut1..3 as lut4 (same table groups).
 */
export function heldFormat(f: WeightFormat, o: HoldOptions): WeightFormat {
  if (f.kind !== 'lut' || !o.q8) return f;
  if (f.bits === 8 || (f.bits >= 5 && o.repack)) return { kind: 'int8', group: 'c' };
  if (f.bits <= 3 && o.repack) return { kind: 'lut', bits: 4, group: f.group };
  return f;
}

/** kernels: for LUT codes (repacking, or the planar layout of packed lut5..7). */
export function prepareMatrix(arena: Arena, w: WeightTensor, o: HoldOptions = { q8: false, repack: true }, kernels?: LutKernels): WasmMatrix {
  const where = `${w.source}: tensor "${w.name}" (${formatName(w.format)})`;
  if (w.shape.length !== 2) throw new LutraError(`${w.source}: tensor "${w.name}" should be 2-D, has shape [${w.shape}]`);
  const [rows, cols] = w.shape;
  const f = w.format;
  const stride = rowBytes(f, cols);
  if (w.data.byteLength !== rows * stride) throw new LutraError(`${where} has ${w.data.byteLength} bytes, expected ${rows * stride}`);

  const useQ8 = o.q8 && usesQ8(f);
  if (useQ8 && f.kind === 'lut') return prepareLutQ8(arena, w, f, where, o.repack, kernels);
  const values = auxValues(w, rows, cols, where);
  const aux = values ? arena.copyIn(bytesOf(values)) : 0;
  const auxBytes = values?.byteLength ?? 0;
  const data = arena.copyIn(w.data);
  const desc = describe(arena, [FORMAT_CODE[f.kind], data, rows, cols, aux, ...kernelFields(f, cols), stride, useQ8 ? 1 : 0, f.kind === 'f16' && allFiniteF16(w.data) ? 1 : 0]);
  return { name: w.name, rows, cols, desc, bytes: w.data.byteLength + auxBytes, q8: useQ8, mem: 0 };
}

/** The scales or table of w, checked against its format's layout (undefined for plain formats). */
function auxValues(w: WeightTensor, rows: number, cols: number, where: string): Float32Array | undefined {
  const layout = auxLayout(w.format, rows, cols);
  if (!layout) return undefined;
  const values = w[layout.name];
  if (!values) throw new LutraError(`${where} has no ${layout.name}`);
  if (values.length !== layout.count) throw new LutraError(`${where} has ${values.length} ${layout.what}, expected ${layout.count}`);
  return values;
}

/** Write a descriptor (the fields of kernels/matrix.ts in order) into the arena; returns its address. */
function describe(arena: Arena, fields: number[]): number {
  const desc = arena.bytes(DESC_BYTES);
  new Int32Array(arena.memory.buffer, desc, DESC_BYTES / 4).set(fields);
  return desc;
}

/**
 * LUT under q8 activations: the tables rounded to integers (lutQ8Tables), each row's scale, and
 * the codes as the kernels read them. Repacked: lut5..8 as int8 rows (the int8 kernels), lut1..3 as
 * lut4 rows against their tables padded to 16 entries (the lut4 kernels). Else as stored (lut5..7
 * re-laid out into the planar layout), with the rounded tables as f32 (row decode) and int8.
 */
function prepareLutQ8(arena: Arena, w: WeightTensor, f: WeightFormat & { kind: 'lut' }, where: string, repack: boolean, kernels?: LutKernels): WasmMatrix {
  const [rows, cols] = w.shape;
  const stride = rowBytes(f, cols);
  const layout = auxLayout(f, rows, cols)!;
  const held = heldFormat(f, { q8: true, repack });
  const asInt8 = held.kind === 'int8';
  // The tables' entries as held: lut1..3's padded to lut4's 16.
  const bits = held.kind === 'lut' ? held.bits : f.bits;
  const asLut4 = bits !== f.bits;
  if ((asInt8 || asLut4 || f.bits >= 5) && !kernels) throw new Error(`internal: prepare of ${where} needs the kernels`);
  // lut1..3 and lut4 tables round alike (to ±63), so padding with zeros changes no entry.
  const t = lutQ8Tables(asLut4 ? padTables(auxValues(w, rows, cols, where)!, f.bits, 4) : auxValues(w, rows, cols, where)!, bits);
  const rowScales = new Float32Array(rows);
  for (let r = 0; r < rows; r++) rowScales[r] = t.scales[unitOf(layout, r)];
  const scales = arena.copyIn(bytesOf(rowScales));
  const tables = arena.copyIn(new Uint8Array(t.codes.buffer, t.codes.byteOffset, t.codes.byteLength));
  // The kernels below read up to 7 bytes past a row's last code.
  const src = () => {
    const at = arena.bytes(w.data.byteLength + 8);
    new Uint8Array(arena.memory.buffer).set(w.data, at);
    return at;
  };
  // In slices of rows: V8 replaces a function's baseline code with optimized code between calls.
  const slices = (each: (r: number, n: number) => void) => {
    for (let r = 0; r < rows; r += 1024) each(r, Math.min(1024, rows - r));
  };
  if (asInt8) {
    // Each code replaced by its table's int8 value: the int8 kernels run it, one scale per row.
    const data = arena.bytes(rows * cols);
    const codes = src();
    slices((r, n) => kernels!.lutToInt8(codes + r * stride, data + r * cols, r, n, cols, f.bits, stride, tables, f.group));
    arena.release(codes);
    arena.release(tables);
    const desc = describe(arena, [FORMAT_CODE.int8, data, rows, cols, scales, ...kernelFields({ kind: 'int8', group: 'c' }, cols), cols, 1, 0]);
    return { name: w.name, rows, cols, desc, bytes: rows * cols + rowScales.byteLength, q8: true, mem: 0 };
  }
  const heldStride = rowBytes(held, cols);
  const table = arena.copyIn(bytesOf(t.rounded));
  let data: number;
  if (asLut4) {
    data = arena.bytes(rows * heldStride);
    const codes = src();
    slices((r, n) => kernels!.lutToNibbles(codes + r * stride, data + r * heldStride, n, cols, f.bits, stride));
    arena.release(codes);
  } else data = arena.copyIn(w.data);
  // lut5..7 packed: the codes' full blocks re-laid out into the planar layout the kernels read (lut-q8.ts).
  const planar = bits >= 5;
  if (planar) slices((r, n) => kernels!.lutToPlanar(data + r * stride, n, cols, bits, stride));
  const desc = describe(arena, [FORMAT_CODE.lut, data, rows, cols, table, ...kernelFields(held, cols), heldStride, 1, 0, tables, scales, planar ? 1 : 0]);
  return { name: w.name, rows, cols, desc, bytes: rows * heldStride + t.rounded.byteLength + t.codes.byteLength + rowScales.byteLength, q8: true, mem: 0 };
}

/** Tables of 2^from entries each, widened to 2^to entries with zeros after them. */
function padTables(table: Float32Array, from: number, to: number): Float32Array {
  const n = 1 << from, m = 1 << to;
  const out = new Float32Array((table.length / n) * m);
  for (let u = 0; u < table.length / n; u++) out.set(table.subarray(u * n, (u + 1) * n), u * m);
  return out;
}

/** The descriptor's per-kind fields: scales per row (0: one for the tensor) and block (int), bits and table group (lut). */
function kernelFields(f: WeightFormat, cols: number): [perRow: number, block: number, bits: number, tableGroup: number] {
  switch (f.kind) {
    case 'int8':
    case 'int4':
      return [f.group === 't' ? 0 : cols / intBlock(f, cols), intBlock(f, cols), 0, 0];
    case 'lut':
      return [0, cols, f.bits, f.group];
    default:
      return [0, cols, 0, 0];
  }
}

/** No f16 Inf/NaN (exponent 31) in the data: the kernels may use their 4-op conversion. */
function allFiniteF16(data: Uint8Array): boolean {
  const d = data.byteOffset % 2 === 0 ? data : data.slice();
  const h = new Uint16Array(d.buffer, d.byteOffset, d.byteLength >> 1);
  for (let i = 0; i < h.length; i++) if ((h[i] & 0x7c00) === 0x7c00) return false;
  return true;
}

function bytesOf(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}
