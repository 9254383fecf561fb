// Reading chosen rows of a 2-D weight straight from its file, for tables too large to keep
// resident (an embedding looked up a few tokens at a time). A reader holds its own file
// descriptors, so it outlives the source that made it; per row it reads only that row's bytes
// (plus that row's scales or table row) with positioned reads, and decodes them to f32 exactly
// as the reference backend's dequantizer does.
import { closeSync, openSync, readSync } from 'node:fs';
import { LutraError } from '../util/errors.js';
import { f16Table32 } from '../util/half.js';
import type { WeightFormat } from '../model/weight.js';
import { auxLayout, formatName, formatOfGgml, misfit, rowBytes, rowDecode, sameFormat, unitOf, type AuxLayout, type RowDecode } from '../model/formats.js';

export interface RowReader {
  readonly name: string;
  readonly rows: number;
  readonly cols: number;
  /** The format of the values (GGUF Q8_0 / Q4_0 read as int8:32 / int4:32, as their sources load them). */
  readonly format: WeightFormat;
  /** f32 values of the given rows, ids.length × cols, into out */
  read(ids: ArrayLike<number>, out: Float32Array): void;
  close(): void;
}

/** A byte range of a file. */
export interface FileSpan {
  path: string;
  /** Absolute byte offset in the file. */
  offset: number;
  nbytes: number;
}

/**
 * Where a matrix's bytes are, by storage layout:
 * - lutra: `data` as in WeightTensor.data (rowBytes per row); for a format with scales or a table,
 *   `aux` holds them in units as formats.ts lays them out (a row's scales, a group's table).
 * - ggml: Q8_0 (34-byte blocks: f16 scale, 32 int8) or Q4_0 (18-byte blocks: f16 scale, 16 bytes whose
 *   low nibbles are elements 0..15 and high nibbles 16..31); a row is cols/32 blocks.
 */
export type RowLayout =
  | { kind: 'lutra'; data: FileSpan; aux?: FileSpan & { dtype: 'f16' | 'f32' } }
  | { kind: 'ggml'; type: 'Q8_0' | 'Q4_0'; data: FileSpan };

export interface RowReaderSpec {
  name: string;
  rows: number;
  cols: number;
  format: WeightFormat;
  layout: RowLayout;
}

/** Bytes read by one positioned read at most: adjacent rows are read together up to this much. */
const RUN_BYTES = 1 << 20;

/** Stride and per-row reading of one region: the row's main bytes, or its scales / table row. */
interface Region {
  fd: number;
  path: string;
  offset: number;
  /** Bytes of one unit (a row, or a row's scales, or a table row). */
  unit: number;
}

/** A reader over `spec`, with its own descriptors (one per distinct file). */
export function openRowReader(spec: RowReaderSpec): RowReader {
  return new FileRowReader(spec);
}

class FileRowReader implements RowReader {
  readonly name: string;
  readonly rows: number;
  readonly cols: number;
  readonly format: WeightFormat;
  private readonly where: string;
  private readonly fds = new Map<string, number>();
  private main!: Region;
  /** Scales (int) or table rows (lut); absent for plain formats and ggml layouts. */
  private aux?: Region & { dtype: 'f16' | 'f32'; layout: AuxLayout };
  /** When every row uses the same aux unit (int group 't', lut group 0): it, read once. */
  private fixedAux?: Float32Array;
  private buf = new Uint8Array(0);
  private auxBuf = new Uint8Array(0);
  private auxF32 = new Float32Array(0);
  private readonly decode: RowDecode;
  private closed = false;

  constructor(spec: RowReaderSpec) {
    const { name, rows, cols, format, layout } = spec;
    this.name = name;
    this.rows = rows;
    this.cols = cols;
    this.format = format;
    this.where = `${layout.data.path}: tensor "${name}"`;
    if (!Number.isSafeInteger(rows) || !Number.isSafeInteger(cols) || rows < 0 || cols < 0) {
      throw new LutraError(`${this.where}: shape [${rows}, ${cols}] is not a matrix of non-negative integers`);
    }
    const unit = this.unitBytes(layout);
    this.expectBytes(layout.data, rows * unit, `${formatName(format)} [${rows}, ${cols}]`);
    try {
      this.main = { fd: this.fd(layout.data.path), path: layout.data.path, offset: layout.data.offset, unit };
      if (layout.kind === 'lutra') {
        const problem = misfit(format, rows, cols);
        if (problem) throw new LutraError(`${this.where}: ${formatName(format)} cannot hold [${rows}, ${cols}]: ${problem}`);
        const aux = auxLayout(format, rows, cols);
        if (!aux !== !layout.aux) throw this.mismatch(`lutra layout ${layout.aux ? 'with' : 'without'} scales or table`);
        if (aux && layout.aux) {
          this.setAux(layout.aux, aux);
          if (aux.rowsPerUnit === 0) this.fixedAux = this.readAux(0, 1).slice();
        }
      }
      this.decode = layout.kind === 'ggml' ? ggmlDecoder(layout.type, cols) : rowDecode(format, cols);
    } catch (e) {
      this.close();
      throw e;
    }
  }

  private mismatch(kind: string): LutraError {
    return new LutraError(`${this.where}: a ${kind} cannot hold ${formatName(this.format)}`);
  }

  private unitBytes(layout: RowLayout): number {
    const { format, cols } = this;
    if (layout.kind === 'ggml') {
      if (!sameFormat(format, formatOfGgml(layout.type)!)) throw this.mismatch(`ggml ${layout.type.toLowerCase()} layout`);
      if (cols % 32 !== 0) throw new LutraError(`${this.where}: ${cols} columns are not a multiple of the ggml block size 32`);
      return (cols / 32) * (layout.type === 'Q8_0' ? 34 : 18);
    }
    return rowBytes(format, cols);
  }

  private expectBytes(span: FileSpan, nbytes: number, what: string): void {
    if (span.nbytes !== nbytes) throw new LutraError(`${span.path}: tensor "${this.name}": ${span.nbytes} bytes stored; ${what} needs ${nbytes}`);
  }

  private setAux(span: FileSpan & { dtype: 'f16' | 'f32' }, layout: AuxLayout): void {
    const size = span.dtype === 'f16' ? 2 : 4;
    this.expectBytes(span, layout.count * size, `${formatName(this.format)} [${this.rows}, ${this.cols}] (${layout.name})`);
    this.aux = { fd: this.fd(span.path), path: span.path, offset: span.offset, unit: layout.values * size, dtype: span.dtype, layout };
  }

  private fd(path: string): number {
    let fd = this.fds.get(path);
    if (fd === undefined) {
      try {
        fd = openSync(path, 'r');
      } catch (e) {
        throw new LutraError(`${path}: cannot open to read rows of tensor "${this.name}" (${(e as NodeJS.ErrnoException).code ?? e})`);
      }
      this.fds.set(path, fd);
    }
    return fd;
  }

  /** Read `n` bytes at `pos` of a region's file into dst[0..n). */
  private pread(region: Region, dst: Uint8Array, n: number, pos: number): void {
    for (let done = 0; done < n; ) {
      const got = readSync(region.fd, dst, done, n - done, pos + done);
      if (got <= 0) throw new LutraError(`${region.path}: truncated while reading rows of tensor "${this.name}" (byte ${pos + done})`);
      done += got;
    }
  }

  /** Aux units [u0, u0 + n) as f32, in a buffer reused by the next call. */
  private readAux(u0: number, n: number): Float32Array {
    const aux = this.aux!;
    const bytes = n * aux.unit;
    if (this.auxBuf.byteLength < bytes) this.auxBuf = new Uint8Array(bytes);
    this.pread(aux, this.auxBuf, bytes, aux.offset + u0 * aux.unit);
    const count = n * aux.layout.values;
    if (this.auxF32.length < count) this.auxF32 = new Float32Array(count);
    if (aux.dtype === 'f32') {
      new Uint8Array(this.auxF32.buffer, 0, bytes).set(this.auxBuf.subarray(0, bytes));
    } else {
      const h = new Uint16Array(this.auxBuf.buffer, 0, count);
      const t = f16Table32();
      for (let i = 0; i < count; i++) this.auxF32[i] = t[h[i]];
    }
    return this.auxF32.subarray(0, count);
  }

  read(ids: ArrayLike<number>, out: Float32Array): void {
    if (this.closed) throw new LutraError(`${this.where}: the row reader is closed`, 'disposed');
    const { rows, cols } = this;
    const n = ids.length;
    if (out.length < n * cols) throw new LutraError(`${this.where}: output holds ${out.length} values; ${n} rows of ${cols} need ${n * cols}`);
    for (let i = 0; i < n; i++) {
      const id = ids[i];
      if (!Number.isInteger(id) || id < 0 || id >= rows) {
        throw new LutraError(`${this.where}: row id ${id} is out of range; valid ids are 0..${rows - 1} (${rows} rows)`);
      }
    }
    if (n === 0 || cols === 0) return;
    // Distinct ids in ascending order, each decoded once (at its first position in `out`) and copied to repeats.
    const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => ids[a] - ids[b] || a - b);
    const unit = this.main.unit;
    const maxRun = Math.max(1, Math.floor(RUN_BYTES / Math.max(1, unit)));
    for (let k = 0; k < n; ) {
      // A run of consecutive distinct rows r0..r1, read with one positioned read.
      const r0 = ids[order[k]];
      let r1 = r0;
      let end = k + 1;
      for (; end < n; end++) {
        const r = ids[order[end]];
        if (r === r1) continue;
        if (r !== r1 + 1 || r - r0 + 1 > maxRun) break;
        r1 = r;
      }
      const count = r1 - r0 + 1;
      const bytes = count * unit;
      // One spare byte: the lut decoder may look one byte past a row's last code.
      if (this.buf.byteLength < bytes + 1) this.buf = new Uint8Array(Math.max(bytes + 1, 2 * this.buf.byteLength));
      this.pread(this.main, this.buf, bytes, this.main.offset + r0 * unit);
      const layout = this.aux?.layout;
      let aux = this.fixedAux ?? this.auxF32;
      let a0 = 0;
      if (layout && !this.fixedAux) {
        a0 = unitOf(layout, r0);
        aux = this.readAux(a0, unitOf(layout, r1) - a0 + 1);
      }
      let prev = -1;
      let first = 0;
      for (let j = k; j < end; j++) {
        const pos = order[j];
        const r = ids[pos];
        if (r !== prev) {
          first = pos;
          prev = r;
          const auxAt = layout ? (unitOf(layout, r) - a0) * layout.values : 0;
          this.decode(this.buf, (r - r0) * unit, aux, auxAt, out.subarray(pos * cols, (pos + 1) * cols));
        } else {
          out.copyWithin(pos * cols, first * cols, (first + 1) * cols);
        }
      }
      k = end;
    }
  }

  close(): void {
    this.closed = true;
    for (const fd of this.fds.values()) closeSync(fd);
    this.fds.clear();
  }
}

/** A row of ggml Q8_0 or Q4_0 blocks (described at RowLayout) decoded to f32. */
function ggmlDecoder(type: 'Q8_0' | 'Q4_0', cols: number): RowDecode {
  const t = f16Table32();
  const blocks = cols / 32;
  if (type === 'Q8_0') {
    return (bytes, at, _aux, _a, dst) => {
      for (let b = 0; b < blocks; b++) {
        const o = at + b * 34;
        const d = t[bytes[o] | (bytes[o + 1] << 8)];
        for (let j = 0; j < 32; j++) dst[b * 32 + j] = ((bytes[o + 2 + j] << 24) >> 24) * d;
      }
    };
  }
  return (bytes, at, _aux, _a, dst) => {
    for (let b = 0; b < blocks; b++) {
      const o = at + b * 18;
      const d = t[bytes[o] | (bytes[o + 1] << 8)];
      for (let j = 0; j < 16; j++) {
        const v = bytes[o + 2 + j];
        dst[b * 32 + j] = ((v & 15) - 8) * d;
        dst[b * 32 + 16 + j] = ((v >> 4) - 8) * d;
      }
    }
  };
}
