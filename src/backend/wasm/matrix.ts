// prepare(): copy a weight's bytes (and scales or table) into the arena once, and write the
// descriptor the kernels read (kernels/matrix.ts has the same layout). A LUT weight under q8
// activations also gets its tables rounded to integers (lutQ8Tables) and a scale per row; lut5..8
// then become int8 per row outright ("repacked": each code replaced by its table's int8 value, a
// byte a weight, and the int8 kernels run them). lut8 keeps its size so; lut5..7 grow to 8 bits a
// weight, and run at int8's speed instead of about half of it through their own kernels (a 32- to
// 128-entry lookup costs more than the dot product: docs/EXPERIMENTS.md LK8, LK11). With repack
// off they stay packed, in the planar layout their kernels read.
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
export type LutKernels = Pick<Kernels, 'lutToPlanar' | 'lutToInt8'>;

/** How prepareMatrix holds weights: q8 activations (usesQ8 decides per format), lut5..7 repacked to int8. */
export interface HoldOptions {
  q8: boolean;
  repack: boolean;
}

/** The format a weight of format f is held and read in after prepareMatrix (lut5..8 under q8 and repack: int8 per row). */
export function heldFormat(f: WeightFormat, o: HoldOptions): WeightFormat {
  return f.kind === 'lut' && o.q8 && (f.bits === 8 || (f.bits >= 5 && o.repack)) ? { kind: 'int8', group: 'c' } : f;
}

/** kernels: for re-laying out packed lut5..7 codes. */
export function prepareMatrix(arena: Arena, w: WeightTensor, o: HoldOptions = { q8: false, repack: true }, kernels?: LutKernels): WasmMatrix {
  const where = `${w.source}: tensor "${w.name}" (${formatName(w.format)})`;
  if (w.shape.length !== 2) throw new LutraError(`${w.source}: tensor "${w.name}" should be 2-D, has shape [${w.shape}]`);
  const [rows, cols] = w.shape;
  const f = w.format;
  const stride = rowBytes(f, cols);
  if (w.data.byteLength !== rows * stride) throw new LutraError(`${where} has ${w.data.byteLength} bytes, expected ${rows * stride}`);

  const useQ8 = o.q8 && usesQ8(f);
  if (useQ8 && f.kind === 'lut') return prepareLutQ8(arena, w, f, where, heldFormat(f, o).kind === 'int8', kernels);
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
 * LUT under q8 activations. Repacked (lut8 always, lut5..7 by default): int8 codes, a scale per
 * row. Else: the codes as they are, the rounded tables as f32 (row decode) and as int8 (the q8
 * kernels), and each row's scale.
 */
function prepareLutQ8(arena: Arena, w: WeightTensor, f: WeightFormat & { kind: 'lut' }, where: string, repack: boolean, kernels?: LutKernels): WasmMatrix {
  const [rows, cols] = w.shape;
  const stride = rowBytes(f, cols);
  const layout = auxLayout(f, rows, cols)!;
  const t = lutQ8Tables(auxValues(w, rows, cols, where)!, f.bits);
  const rowScales = new Float32Array(rows);
  for (let r = 0; r < rows; r++) rowScales[r] = t.scales[unitOf(layout, r)];
  const scales = arena.copyIn(bytesOf(rowScales));
  const n = layout.values;
  if (repack) {
    // Each code replaced by its table's int8 value: the int8 kernels run it, one scale per row.
    if (!kernels) throw new Error(`internal: prepare of ${where} needs the kernels`);
    const data = arena.bytes(rows * cols);
    const src = arena.bytes(w.data.byteLength + 8); // the kernel reads up to 7 bytes past a row's last code
    new Uint8Array(arena.memory.buffer).set(w.data, src);
    const tables = arena.copyIn(new Uint8Array(t.codes.buffer, t.codes.byteOffset, t.codes.byteLength));
    // In slices of rows: V8 replaces a function's baseline code with optimized code between calls.
    for (let r = 0; r < rows; r += 1024) kernels.lutToInt8(src + r * stride, data + r * cols, r, Math.min(1024, rows - r), cols, f.bits, stride, tables, f.group);
    arena.release(tables);
    arena.release(src);
    const desc = describe(arena, [FORMAT_CODE.int8, data, rows, cols, scales, ...kernelFields({ kind: 'int8', group: 'c' }, cols), cols, 1, 0]);
    return { name: w.name, rows, cols, desc, bytes: rows * cols + rowScales.byteLength, q8: true, mem: 0 };
  }
  const table = arena.copyIn(bytesOf(t.rounded));
  const tables = arena.copyIn(new Uint8Array(t.codes.buffer, t.codes.byteOffset, t.codes.byteLength));
  const data = arena.copyIn(w.data);
  // lut5..7: the codes' full blocks re-laid out into the planar layout the kernels read (lut-q8.ts).
  const planar = f.bits >= 5;
  if (planar) {
    if (!kernels) throw new Error(`internal: prepare of ${where} needs the kernels`);
    // In slices of rows: V8 replaces a function's baseline code with optimized code between calls.
    for (let r = 0; r < rows; r += 1024) kernels.lutToPlanar(data + r * stride, Math.min(1024, rows - r), cols, f.bits, stride);
  }
  const desc = describe(arena, [FORMAT_CODE.lut, data, rows, cols, table, ...kernelFields(f, cols), stride, 1, 0, tables, scales, planar ? 1 : 0]);
  return { name: w.name, rows, cols, desc, bytes: w.data.byteLength + t.rounded.byteLength + t.codes.byteLength + rowScales.byteLength, q8: true, mem: 0 };
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
