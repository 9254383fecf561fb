// GGUF v3 container: reader and streaming writer, plus the ggml block formats lutra
// produces itself (F32, F16, BF16, Q8_0, Q4_0).
//
// Layout (little-endian): magic "GGUF", u32 version (3), u64 tensor_count, u64 kv_count,
// kv_count × {string key, u32 value_type, value}, tensor_count × {string name, u32 n_dims,
// u64 ne[n_dims] (innermost first), u32 ggml_type, u64 offset}, zero padding to `alignment`
// (general.alignment, default 32), then the data section. Tensor offsets are relative to the
// data section; ggml's reader requires each to equal the running sum of the previous tensors'
// sizes padded to `alignment`, so tensors are written back to back in that way.
// Strings are u64 length + UTF-8 bytes (no terminator).
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { LutraError } from '../util/errors.js';
import { writeOutput, yieldToEvents } from '../util/atomic-output.js';
import { f16BitsToF32, f32ToF16Bits } from '../util/half.js';
import { decodeQ4_0, decodeQ8_0 } from './ggml-quants.js';
import type { Bytes } from './safetensors.js';
export { QK8_0, QK4_0, encodeQ8_0, decodeQ8_0, encodeQ4_0, decodeQ4_0 } from './ggml-quants.js';

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;

// ---------------------------------------------------------------------------------------------
// ggml tensor types

/** ggml type ids (ggml.h `enum ggml_type`). */
export const GgufType = {
  F32: 0,
  F16: 1,
  Q4_0: 2,
  Q4_1: 3,
  Q5_0: 6,
  Q5_1: 7,
  Q8_0: 8,
  Q8_1: 9,
  Q2_K: 10,
  Q3_K: 11,
  Q4_K: 12,
  Q5_K: 13,
  Q6_K: 14,
  Q8_K: 15,
  IQ2_XXS: 16,
  IQ2_XS: 17,
  IQ3_XXS: 18,
  IQ1_S: 19,
  IQ4_NL: 20,
  IQ3_S: 21,
  IQ2_S: 22,
  IQ4_XS: 23,
  I8: 24,
  I16: 25,
  I32: 26,
  I64: 27,
  F64: 28,
  IQ1_M: 29,
  BF16: 30,
  TQ1_0: 34,
  TQ2_0: 35,
  MXFP4: 39,
  NVFP4: 40,
  Q1_0: 41,
  Q2_0: 42,
} as const;
export type GgufType = (typeof GgufType)[keyof typeof GgufType];

export interface GgufTypeInfo {
  name: string;
  /** Elements per block (1 for plain types). */
  blockSize: number;
  /** Bytes per block. */
  typeSize: number;
}

// Block sizes and bytes per block, checked against ggml_blck_size/ggml_type_size of the
// libggml-base.so shipped with node-llama-cpp 3.22.1.
const TYPE_INFO: Record<number, GgufTypeInfo> = {
  0: { name: 'F32', blockSize: 1, typeSize: 4 },
  1: { name: 'F16', blockSize: 1, typeSize: 2 },
  2: { name: 'Q4_0', blockSize: 32, typeSize: 18 },
  3: { name: 'Q4_1', blockSize: 32, typeSize: 20 },
  6: { name: 'Q5_0', blockSize: 32, typeSize: 22 },
  7: { name: 'Q5_1', blockSize: 32, typeSize: 24 },
  8: { name: 'Q8_0', blockSize: 32, typeSize: 34 },
  9: { name: 'Q8_1', blockSize: 32, typeSize: 36 },
  10: { name: 'Q2_K', blockSize: 256, typeSize: 84 },
  11: { name: 'Q3_K', blockSize: 256, typeSize: 110 },
  12: { name: 'Q4_K', blockSize: 256, typeSize: 144 },
  13: { name: 'Q5_K', blockSize: 256, typeSize: 176 },
  14: { name: 'Q6_K', blockSize: 256, typeSize: 210 },
  15: { name: 'Q8_K', blockSize: 256, typeSize: 292 },
  16: { name: 'IQ2_XXS', blockSize: 256, typeSize: 66 },
  17: { name: 'IQ2_XS', blockSize: 256, typeSize: 74 },
  18: { name: 'IQ3_XXS', blockSize: 256, typeSize: 98 },
  19: { name: 'IQ1_S', blockSize: 256, typeSize: 50 },
  20: { name: 'IQ4_NL', blockSize: 32, typeSize: 18 },
  21: { name: 'IQ3_S', blockSize: 256, typeSize: 110 },
  22: { name: 'IQ2_S', blockSize: 256, typeSize: 82 },
  23: { name: 'IQ4_XS', blockSize: 256, typeSize: 136 },
  24: { name: 'I8', blockSize: 1, typeSize: 1 },
  25: { name: 'I16', blockSize: 1, typeSize: 2 },
  26: { name: 'I32', blockSize: 1, typeSize: 4 },
  27: { name: 'I64', blockSize: 1, typeSize: 8 },
  28: { name: 'F64', blockSize: 1, typeSize: 8 },
  29: { name: 'IQ1_M', blockSize: 256, typeSize: 56 },
  30: { name: 'BF16', blockSize: 1, typeSize: 2 },
  34: { name: 'TQ1_0', blockSize: 256, typeSize: 54 },
  35: { name: 'TQ2_0', blockSize: 256, typeSize: 66 },
  39: { name: 'MXFP4', blockSize: 32, typeSize: 17 },
  40: { name: 'NVFP4', blockSize: 64, typeSize: 36 },
  41: { name: 'Q1_0', blockSize: 128, typeSize: 18 },
  42: { name: 'Q2_0', blockSize: 64, typeSize: 18 },
};

export function ggufTypeInfo(type: number): GgufTypeInfo | undefined {
  return TYPE_INFO[type];
}

export function ggufTypeName(type: number): string {
  return TYPE_INFO[type]?.name ?? `ggml type ${type}`;
}

/**
 * Bytes of a tensor of `type` with PyTorch-order `shape`; throws a LutraError (naming `what`)
 * if the innermost dimension is not a multiple of the type's block size.
 */
export function ggufTensorBytes(type: number, shape: readonly number[], what = 'tensor'): number {
  const info = TYPE_INFO[type];
  if (!info) throw new LutraError(`${what}: unsupported ggml type id ${type}`);
  let n = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw new LutraError(`${what}: invalid dimension ${d} in shape [${shape.join(', ')}]`);
    n *= d;
  }
  const inner = shape.length === 0 ? 1 : shape[shape.length - 1]!;
  if (inner % info.blockSize !== 0) {
    throw new LutraError(
      `${what}: innermost dimension ${inner} of shape [${shape.join(', ')}] is not a multiple of the ${info.name} block size ${info.blockSize}`,
    );
  }
  return (n / info.blockSize) * info.typeSize;
}

// ---------------------------------------------------------------------------------------------
// Metadata

/** GGUF metadata value type ids. */
export const GgufValueType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;

export type GgufNumberType = 'uint8' | 'int8' | 'uint16' | 'int16' | 'uint32' | 'int32' | 'float32' | 'float64';
export type GgufBigType = 'uint64' | 'int64';
export type GgufScalarType = GgufNumberType | GgufBigType | 'bool' | 'string';

export type GgufMetadataEntry =
  | { key: string; type: GgufNumberType; value: number }
  | { key: string; type: GgufBigType; value: number | bigint }
  | { key: string; type: 'bool'; value: boolean }
  | { key: string; type: 'string'; value: string }
  | { key: string; type: 'array'; itemType: GgufNumberType; value: ArrayLike<number> }
  | { key: string; type: 'array'; itemType: GgufBigType; value: ArrayLike<number | bigint> }
  | { key: string; type: 'array'; itemType: 'bool'; value: ArrayLike<boolean> }
  | { key: string; type: 'array'; itemType: 'string'; value: ArrayLike<string> };

/** Short constructors for metadata entries. */
export const kv = {
  u8: (key: string, value: number): GgufMetadataEntry => ({ key, type: 'uint8', value }),
  i8: (key: string, value: number): GgufMetadataEntry => ({ key, type: 'int8', value }),
  u16: (key: string, value: number): GgufMetadataEntry => ({ key, type: 'uint16', value }),
  i16: (key: string, value: number): GgufMetadataEntry => ({ key, type: 'int16', value }),
  u32: (key: string, value: number): GgufMetadataEntry => ({ key, type: 'uint32', value }),
  i32: (key: string, value: number): GgufMetadataEntry => ({ key, type: 'int32', value }),
  u64: (key: string, value: number | bigint): GgufMetadataEntry => ({ key, type: 'uint64', value }),
  i64: (key: string, value: number | bigint): GgufMetadataEntry => ({ key, type: 'int64', value }),
  f32: (key: string, value: number): GgufMetadataEntry => ({ key, type: 'float32', value }),
  f64: (key: string, value: number): GgufMetadataEntry => ({ key, type: 'float64', value }),
  bool: (key: string, value: boolean): GgufMetadataEntry => ({ key, type: 'bool', value }),
  str: (key: string, value: string): GgufMetadataEntry => ({ key, type: 'string', value }),
  arr: {
    u8: (key: string, value: ArrayLike<number>): GgufMetadataEntry => ({ key, type: 'array', itemType: 'uint8', value }),
    i8: (key: string, value: ArrayLike<number>): GgufMetadataEntry => ({ key, type: 'array', itemType: 'int8', value }),
    u16: (key: string, value: ArrayLike<number>): GgufMetadataEntry => ({ key, type: 'array', itemType: 'uint16', value }),
    i16: (key: string, value: ArrayLike<number>): GgufMetadataEntry => ({ key, type: 'array', itemType: 'int16', value }),
    u32: (key: string, value: ArrayLike<number>): GgufMetadataEntry => ({ key, type: 'array', itemType: 'uint32', value }),
    i32: (key: string, value: ArrayLike<number>): GgufMetadataEntry => ({ key, type: 'array', itemType: 'int32', value }),
    u64: (key: string, value: ArrayLike<number | bigint>): GgufMetadataEntry => ({ key, type: 'array', itemType: 'uint64', value }),
    i64: (key: string, value: ArrayLike<number | bigint>): GgufMetadataEntry => ({ key, type: 'array', itemType: 'int64', value }),
    f32: (key: string, value: ArrayLike<number>): GgufMetadataEntry => ({ key, type: 'array', itemType: 'float32', value }),
    f64: (key: string, value: ArrayLike<number>): GgufMetadataEntry => ({ key, type: 'array', itemType: 'float64', value }),
    bool: (key: string, value: ArrayLike<boolean>): GgufMetadataEntry => ({ key, type: 'array', itemType: 'bool', value }),
    str: (key: string, value: ArrayLike<string>): GgufMetadataEntry => ({ key, type: 'array', itemType: 'string', value }),
  },
};

const TYPE_ID: Record<GgufScalarType | 'array', number> = {
  uint8: 0, int8: 1, uint16: 2, int16: 3, uint32: 4, int32: 5, float32: 6, bool: 7,
  string: 8, array: 9, uint64: 10, int64: 11, float64: 12,
};
const TYPE_NAME: Record<number, GgufScalarType | 'array'> = Object.fromEntries(
  Object.entries(TYPE_ID).map(([k, v]) => [v, k as GgufScalarType | 'array']),
);

/**
 * Values as read back. Numbers of 8..32-bit and float types are `number`; 64-bit integers are
 * `bigint` (exact); arrays of numbers are typed arrays of the stored type (BigInt64Array /
 * BigUint64Array for 64-bit), arrays of strings/bools are plain arrays.
 */
export type GgufArrayValue =
  | Uint8Array | Int8Array | Uint16Array | Int16Array | Uint32Array | Int32Array
  | Float32Array | Float64Array | BigUint64Array | BigInt64Array | boolean[] | string[];
export type GgufValue = number | bigint | boolean | string | GgufArrayValue;

export interface GgufValueTypeInfo {
  type: GgufScalarType | 'array';
  itemType?: GgufScalarType;
}

// ---------------------------------------------------------------------------------------------
// Writer

export interface GgufTensorSpec {
  name: string;
  /** PyTorch order (outermost first), e.g. [out, in]; written reversed (ggml `ne` order). */
  shape: number[];
  type: GgufType;
  nbytes: number;
  /** Called once, when the tensor is written: all bytes at once, or in consecutive pieces (a tensor over 4 GiB cannot be one array). */
  data: () => Bytes | Promise<Bytes>;
}

export interface GgufWriteOptions {
  alignment?: number;
  /** Called after the header and after each tensor with tensor-data bytes written so far. */
  onProgress?: (doneBytes: number, totalBytes: number) => void;
  /** Replace an existing file (the default); false refuses one, naming `flag`. */
  force?: boolean;
  /** The option the path came from (e.g. --out), named in errors; set when the command has --force. */
  flag?: string;
}

class ByteWriter {
  buf = Buffer.alloc(1 << 16);
  len = 0;
  private ensure(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const nb = Buffer.alloc(cap);
    this.buf.copy(nb, 0, 0, this.len);
    this.buf = nb;
  }
  u8(v: number): void { this.ensure(1); this.buf.writeUInt8(v, this.len); this.len += 1; }
  i8(v: number): void { this.ensure(1); this.buf.writeInt8(v, this.len); this.len += 1; }
  u16(v: number): void { this.ensure(2); this.buf.writeUInt16LE(v, this.len); this.len += 2; }
  i16(v: number): void { this.ensure(2); this.buf.writeInt16LE(v, this.len); this.len += 2; }
  u32(v: number): void { this.ensure(4); this.buf.writeUInt32LE(v, this.len); this.len += 4; }
  i32(v: number): void { this.ensure(4); this.buf.writeInt32LE(v, this.len); this.len += 4; }
  u64(v: number | bigint): void { this.ensure(8); this.buf.writeBigUInt64LE(BigInt(v), this.len); this.len += 8; }
  i64(v: number | bigint): void { this.ensure(8); this.buf.writeBigInt64LE(BigInt(v), this.len); this.len += 8; }
  f32(v: number): void { this.ensure(4); this.buf.writeFloatLE(v, this.len); this.len += 4; }
  f64(v: number): void { this.ensure(8); this.buf.writeDoubleLE(v, this.len); this.len += 8; }
  str(s: string): void {
    const n = Buffer.byteLength(s, 'utf8');
    this.u64(n);
    this.ensure(n);
    this.buf.write(s, this.len, 'utf8');
    this.len += n;
  }
  bytes(): Buffer { return this.buf.subarray(0, this.len); }
}

function writeScalar(w: ByteWriter, type: GgufScalarType, v: unknown, key: string): void {
  const bad = (): never => {
    throw new LutraError(`GGUF metadata "${key}": value ${String(v)} is not a valid ${type}`);
  };
  const int = (lo: number, hi: number): number => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) bad();
    return v as number;
  };
  switch (type) {
    case 'uint8': return w.u8(int(0, 0xff));
    case 'int8': return w.i8(int(-0x80, 0x7f));
    case 'uint16': return w.u16(int(0, 0xffff));
    case 'int16': return w.i16(int(-0x8000, 0x7fff));
    case 'uint32': return w.u32(int(0, 0xffffffff));
    case 'int32': return w.i32(int(-0x80000000, 0x7fffffff));
    case 'uint64':
    case 'int64': {
      if (typeof v === 'number' && !Number.isSafeInteger(v)) bad();
      if (typeof v !== 'number' && typeof v !== 'bigint') bad();
      const b = BigInt(v as number | bigint);
      if (type === 'uint64' ? b < 0n || b >= 1n << 64n : b < -(1n << 63n) || b >= 1n << 63n) bad();
      return type === 'uint64' ? w.u64(b) : w.i64(b);
    }
    case 'float32': if (typeof v !== 'number') bad(); return w.f32(v as number);
    case 'float64': if (typeof v !== 'number') bad(); return w.f64(v as number);
    case 'bool': if (typeof v !== 'boolean') bad(); return w.u8(v ? 1 : 0);
    case 'string': if (typeof v !== 'string') bad(); return w.str(v as string);
  }
}

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/** Builds the header (magic .. tensor infos) and the data-section layout. */
function buildHeader(metadata: GgufMetadataEntry[], tensors: GgufTensorSpec[], alignment: number) {
  const w = new ByteWriter();
  w.u32(GGUF_MAGIC);
  w.u32(GGUF_VERSION);
  w.u64(tensors.length);
  w.u64(metadata.length);
  const seen = new Set<string>();
  for (const e of metadata) {
    if (seen.has(e.key)) throw new LutraError(`GGUF metadata: duplicate key "${e.key}"`);
    seen.add(e.key);
    w.str(e.key);
    if (e.type === 'array') {
      w.u32(TYPE_ID.array);
      w.u32(TYPE_ID[e.itemType]);
      const arr = e.value as ArrayLike<unknown>;
      w.u64(arr.length);
      for (let i = 0; i < arr.length; i++) writeScalar(w, e.itemType, arr[i], e.key);
    } else {
      if (!(e.type in TYPE_ID)) throw new LutraError(`GGUF metadata "${e.key}": unknown type "${String(e.type)}"`);
      w.u32(TYPE_ID[e.type]);
      writeScalar(w, e.type, e.value, e.key);
    }
  }
  const offsets: number[] = [];
  const names = new Set<string>();
  let off = 0;
  for (const t of tensors) {
    const nameBytes = Buffer.byteLength(t.name, 'utf8');
    if (nameBytes === 0 || nameBytes >= 64) throw new LutraError(`GGUF tensor "${t.name}": name must be 1..63 bytes (ggml GGML_MAX_NAME)`);
    if (names.has(t.name)) throw new LutraError(`GGUF tensor "${t.name}": duplicate tensor name`);
    names.add(t.name);
    if (t.shape.length < 1 || t.shape.length > 4) throw new LutraError(`GGUF tensor "${t.name}": ${t.shape.length} dimensions (ggml supports 1..4)`);
    const expected = ggufTensorBytes(t.type, t.shape, `GGUF tensor "${t.name}"`);
    if (expected !== t.nbytes) {
      throw new LutraError(`GGUF tensor "${t.name}": nbytes ${t.nbytes} does not match ${expected} for ${ggufTypeName(t.type)} [${t.shape.join(', ')}]`);
    }
    w.str(t.name);
    w.u32(t.shape.length);
    for (let i = t.shape.length - 1; i >= 0; i--) w.u64(t.shape[i]!);
    w.u32(t.type);
    w.u64(off);
    offsets.push(off);
    off += alignUp(t.nbytes, alignment);
  }
  return { header: w.bytes(), offsets, dataBytes: off };
}

async function writeAll(fh: import('node:fs/promises').FileHandle, data: Uint8Array, position: number): Promise<void> {
  const CHUNK = 1 << 30; // fs writes are limited to 2 GiB - 1 per call
  let done = 0;
  while (done < data.length) {
    const n = Math.min(CHUNK, data.length - done);
    const { bytesWritten } = await fh.write(data, done, n, position + done);
    if (bytesWritten <= 0) throw new Error(`short write at offset ${position + done}`);
    done += bytesWritten;
  }
}

/**
 * Writes a GGUF v3 file. Tensor data is pulled lazily, one tensor at a time, in the given order.
 * The file is written to a temporary name next to `path` and renamed at the end
 * (src/util/atomic-output.ts); on failure or interruption the temporary file is removed.
 */
export async function writeGguf(
  path: string,
  metadata: GgufMetadataEntry[],
  tensors: GgufTensorSpec[],
  opts: GgufWriteOptions = {},
): Promise<void> {
  const existing = metadata.find((e) => e.key === 'general.alignment');
  const alignment = opts.alignment ?? (typeof existing?.value === 'number' ? existing.value : GGUF_DEFAULT_ALIGNMENT);
  if (!Number.isInteger(alignment) || alignment < 1 || (alignment & (alignment - 1)) !== 0 || alignment > 0x80000000) {
    throw new LutraError(`${path}: GGUF alignment must be a power of two, got ${alignment}`);
  }
  let meta = metadata;
  if (existing) {
    if (existing.type !== 'uint32' || existing.value !== alignment) {
      throw new LutraError(`${path}: metadata general.alignment (${String(existing.value)}) disagrees with the alignment option ${alignment}`);
    }
  } else if (alignment !== GGUF_DEFAULT_ALIGNMENT) {
    meta = [...metadata, kv.u32('general.alignment', alignment)];
  }
  const { header, offsets, dataBytes } = buildHeader(meta, tensors, alignment);
  const dataStart = alignUp(header.length, alignment);
  const totalBytes = tensors.reduce((s, t) => s + t.nbytes, 0);

  const force = opts.force ?? true;
  await writeOutput(path, { force, flag: opts.flag, forceFlag: opts.flag !== undefined, kind: 'file' }, async (tmp) => {
    const fh = await open(tmp, 'w');
    try {
      await writeAll(fh, header, 0);
      const zeros = new Uint8Array(alignment);
      if (dataStart > header.length) await writeAll(fh, zeros.subarray(0, dataStart - header.length), header.length);
      let done = 0;
      opts.onProgress?.(0, totalBytes);
      for (let i = 0; i < tensors.length; i++) {
        const t = tensors[i]!;
        await yieldToEvents();
        const made = await t.data();
        const pos = dataStart + offsets[i]!;
        let written = 0;
        for await (const piece of made instanceof Uint8Array ? [made] : made) {
          if (written + piece.length > t.nbytes) break;
          await writeAll(fh, piece, pos + written);
          written += piece.length;
        }
        if (written !== t.nbytes) {
          throw new LutraError(`GGUF tensor "${t.name}": data() gave ${written === 0 ? 'no' : `${written} or more`} bytes, expected ${t.nbytes}`);
        }
        const pad = alignUp(t.nbytes, alignment) - t.nbytes;
        if (pad > 0) await writeAll(fh, zeros.subarray(0, pad), pos + t.nbytes);
        done += t.nbytes;
        opts.onProgress?.(done, totalBytes);
      }
      const expectedSize = dataStart + dataBytes;
      await fh.truncate(expectedSize);
      await fh.sync();
    } finally {
      await fh.close().catch(() => undefined);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Reader

export interface GgufTensorInfo {
  name: string;
  /** PyTorch order (outermost first). */
  shape: number[];
  type: number;
  /** Absolute byte offset of the tensor data in the file. */
  offset: number;
  nbytes: number;
}

export interface GgufFile {
  path: string;
  version: number;
  alignment: number;
  metadata: Map<string, GgufValue>;
  metadataTypes: Map<string, GgufValueTypeInfo>;
  tensors: GgufTensorInfo[];
  tensorsByName: Map<string, GgufTensorInfo>;
  /** Absolute offset of the data section. */
  dataOffset: number;
  fileSize: number;
}

// ignoreBOM: keep a leading U+FEFF, as Buffer.toString does (Gemma's vocabulary has pieces that start with one).
const utf8 = new TextDecoder('utf-8', { ignoreBOM: true });

class SyncReader {
  private buf = new Uint8Array(0);
  private view = new DataView(this.buf.buffer);
  private bufStart = 0;
  pos = 0;
  what = 'header';
  constructor(private fd: number, readonly path: string, readonly size: number) {}

  fail(msg: string): never {
    throw new LutraError(`${this.path}: ${msg}`);
  }

  private need(n: number): number {
    if (this.pos + n > this.size) {
      this.fail(`truncated GGUF file: expected ${n} more bytes for ${this.what} at offset ${this.pos}, but the file has ${this.size} bytes`);
    }
    const rel = this.pos - this.bufStart;
    if (rel >= 0 && rel + n <= this.buf.length) return rel;
    const want = Math.min(Math.max(n, 1 << 20), this.size - this.pos);
    const b = new Uint8Array(want);
    let got = 0;
    while (got < want) {
      const r = readSync(this.fd, b, got, want - got, this.pos + got);
      if (r <= 0) this.fail(`truncated GGUF file: read ended at offset ${this.pos + got} while reading ${this.what}`);
      got += r;
    }
    this.buf = b;
    this.view = new DataView(b.buffer);
    this.bufStart = this.pos;
    return 0;
  }

  u8(): number { const r = this.need(1); this.pos += 1; return this.buf[r]; }
  i8(): number { const r = this.need(1); this.pos += 1; return this.view.getInt8(r); }
  u16(): number { const r = this.need(2); this.pos += 2; return this.view.getUint16(r, true); }
  i16(): number { const r = this.need(2); this.pos += 2; return this.view.getInt16(r, true); }
  u32(): number { const r = this.need(4); this.pos += 4; return this.view.getUint32(r, true); }
  i32(): number { const r = this.need(4); this.pos += 4; return this.view.getInt32(r, true); }
  u64big(): bigint { const r = this.need(8); this.pos += 8; return this.view.getBigUint64(r, true); }
  i64big(): bigint { const r = this.need(8); this.pos += 8; return this.view.getBigInt64(r, true); }
  f32(): number { const r = this.need(4); this.pos += 4; return this.view.getFloat32(r, true); }
  f64(): number { const r = this.need(8); this.pos += 8; return this.view.getFloat64(r, true); }
  /** u64 that must fit a JS number and be at most `max`. */
  count(what: string, max: number): number {
    const v = this.u64big();
    if (v > BigInt(max)) this.fail(`${what} is ${v}, which cannot fit in the ${this.size}-byte file (corrupt or truncated GGUF)`);
    return Number(v);
  }
  str(): string {
    const n = this.count(`string length (${this.what})`, this.size - this.pos);
    const r = this.need(n);
    this.pos += n;
    return utf8.decode(this.buf.subarray(r, r + n));
  }
}

function readScalar(r: SyncReader, type: number): number | bigint | boolean | string {
  switch (type) {
    case 0: return r.u8();
    case 1: return r.i8();
    case 2: return r.u16();
    case 3: return r.i16();
    case 4: return r.u32();
    case 5: return r.i32();
    case 6: return r.f32();
    case 7: return r.u8() !== 0;
    case 8: return r.str();
    case 10: return r.u64big();
    case 11: return r.i64big();
    case 12: return r.f64();
    default: return r.fail(`unknown GGUF value type ${type} in ${r.what}`);
  }
}

const ITEM_BYTES: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };

function readArray(r: SyncReader, itemType: number): GgufArrayValue {
  const minItem = ITEM_BYTES[itemType] ?? 8; // a string takes at least its 8-byte length
  if (itemType === GgufValueType.ARRAY) r.fail(`nested GGUF arrays are not supported (${r.what})`);
  const n = r.count(`array length (${r.what})`, Math.floor((r.size - r.pos) / minItem));
  switch (itemType) {
    case 0: { const a = new Uint8Array(n); for (let i = 0; i < n; i++) a[i] = r.u8(); return a; }
    case 1: { const a = new Int8Array(n); for (let i = 0; i < n; i++) a[i] = r.i8(); return a; }
    case 2: { const a = new Uint16Array(n); for (let i = 0; i < n; i++) a[i] = r.u16(); return a; }
    case 3: { const a = new Int16Array(n); for (let i = 0; i < n; i++) a[i] = r.i16(); return a; }
    case 4: { const a = new Uint32Array(n); for (let i = 0; i < n; i++) a[i] = r.u32(); return a; }
    case 5: { const a = new Int32Array(n); for (let i = 0; i < n; i++) a[i] = r.i32(); return a; }
    case 6: { const a = new Float32Array(n); for (let i = 0; i < n; i++) a[i] = r.f32(); return a; }
    case 7: { const a: boolean[] = new Array(n); for (let i = 0; i < n; i++) a[i] = r.u8() !== 0; return a; }
    case 8: { const a: string[] = new Array(n); for (let i = 0; i < n; i++) a[i] = r.str(); return a; }
    case 10: { const a = new BigUint64Array(n); for (let i = 0; i < n; i++) a[i] = r.u64big(); return a; }
    case 11: { const a = new BigInt64Array(n); for (let i = 0; i < n; i++) a[i] = r.i64big(); return a; }
    case 12: { const a = new Float64Array(n); for (let i = 0; i < n; i++) a[i] = r.f64(); return a; }
    default: return r.fail(`unknown GGUF array item type ${itemType} in ${r.what}`);
  }
}

/** Parses the header, metadata and tensor infos of a GGUF file (tensor data is not read). */
export function readGguf(path: string): GgufFile {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    throw new LutraError(`${path}: cannot open GGUF file (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  try {
    const size = fstatSync(fd).size;
    const r: SyncReader = new SyncReader(fd, path, size);
    r.what = 'the GGUF magic';
    if (size < 4) r.fail(`truncated GGUF file: ${size} bytes, expected at least the 4-byte magic "GGUF"`);
    const magic = r.u32();
    if (magic !== GGUF_MAGIC) {
      const text = String.fromCharCode(magic & 0xff, (magic >>> 8) & 0xff, (magic >>> 16) & 0xff, magic >>> 24);
      r.fail(`not a GGUF file: magic is ${JSON.stringify(text)} (0x${magic.toString(16).padStart(8, '0')}), expected "GGUF"`);
    }
    r.what = 'the GGUF version';
    const version = r.u32();
    if (version !== 3 && version !== 2) r.fail(`unsupported GGUF version ${version} (lutra reads versions 2 and 3)`);
    r.what = 'the tensor count';
    const nTensors = r.count('tensor count', Math.floor(size / 24));
    r.what = 'the metadata count';
    const nKv = r.count('metadata count', Math.floor(size / 12));

    const metadata = new Map<string, GgufValue>();
    const metadataTypes = new Map<string, GgufValueTypeInfo>();
    for (let i = 0; i < nKv; i++) {
      r.what = `metadata key #${i}`;
      const key = r.str();
      r.what = `metadata "${key}"`;
      const t = r.u32();
      if (metadata.has(key)) r.fail(`duplicate metadata key "${key}"`);
      if (t === GgufValueType.ARRAY) {
        const it = r.u32();
        metadata.set(key, readArray(r, it));
        const itemName = TYPE_NAME[it];
        metadataTypes.set(key, { type: 'array', itemType: itemName === 'array' ? undefined : itemName });
      } else {
        metadata.set(key, readScalar(r, t));
        metadataTypes.set(key, { type: TYPE_NAME[t]! });
      }
    }

    let alignment = GGUF_DEFAULT_ALIGNMENT;
    const al = metadata.get('general.alignment');
    if (al !== undefined) {
      if (typeof al !== 'number' || metadataTypes.get('general.alignment')?.type !== 'uint32' || al === 0 || (al & (al - 1)) !== 0) {
        r.fail(`general.alignment must be a uint32 power of two, got ${String(al)}`);
      }
      alignment = al;
    }

    const infos: Array<Omit<GgufTensorInfo, 'offset'> & { rel: number }> = [];
    for (let i = 0; i < nTensors; i++) {
      r.what = `tensor info #${i}`;
      const name = r.str();
      r.what = `tensor info "${name}"`;
      const nDims = r.u32();
      if (nDims > 4) r.fail(`tensor "${name}" has ${nDims} dimensions (ggml supports at most 4)`);
      const ne: number[] = [];
      for (let j = 0; j < nDims; j++) {
        const d = r.u64big();
        if (d > BigInt(Number.MAX_SAFE_INTEGER)) r.fail(`tensor "${name}" dimension ${j} is ${d}, too large`);
        ne.push(Number(d));
      }
      const type = r.u32();
      if (!TYPE_INFO[type]) r.fail(`tensor "${name}" has unsupported ggml type id ${type}`);
      const relBig = r.u64big();
      if (relBig > BigInt(size)) r.fail(`tensor "${name}" has data offset ${relBig} beyond the end of the ${size}-byte file (truncated?)`);
      const shape = ne.reverse();
      let nbytes: number;
      try {
        nbytes = ggufTensorBytes(type, shape, `tensor "${name}"`);
      } catch (e) {
        r.fail((e as Error).message);
      }
      infos.push({ name, shape, type, nbytes, rel: Number(relBig) });
    }
    const dataOffset = alignUp(r.pos, alignment);
    const tensors: GgufTensorInfo[] = [];
    const tensorsByName = new Map<string, GgufTensorInfo>();
    for (const t of infos) {
      if (t.rel % alignment !== 0) r.fail(`tensor "${t.name}" data offset ${t.rel} is not a multiple of the alignment ${alignment}`);
      const offset = dataOffset + t.rel;
      if (offset + t.nbytes > size) {
        r.fail(`truncated GGUF file: tensor "${t.name}" needs bytes ${offset}..${offset + t.nbytes} but the file has ${size} bytes`);
      }
      if (tensorsByName.has(t.name)) r.fail(`duplicate tensor name "${t.name}"`);
      const info: GgufTensorInfo = { name: t.name, shape: t.shape, type: t.type, offset, nbytes: t.nbytes };
      tensors.push(info);
      tensorsByName.set(t.name, info);
    }
    return { path, version, alignment, metadata, metadataTypes, tensors, tensorsByName, dataOffset, fileSize: size };
  } finally {
    closeSync(fd);
  }
}

/** Reads one tensor's raw bytes. */
export function readTensorBytes(file: GgufFile, info: GgufTensorInfo): Uint8Array {
  const out = new Uint8Array(info.nbytes);
  let fd: number;
  try {
    fd = openSync(file.path, 'r');
  } catch (e) {
    throw new LutraError(`${file.path}: cannot open GGUF file (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  try {
    const CHUNK = 1 << 30;
    let got = 0;
    while (got < info.nbytes) {
      const r = readSync(fd, out, got, Math.min(CHUNK, info.nbytes - got), info.offset + got);
      if (r <= 0) {
        throw new LutraError(
          `${file.path}: truncated GGUF file: tensor "${info.name}" ends at byte ${info.offset + info.nbytes} but reading stopped at ${info.offset + got}`,
        );
      }
      got += r;
    }
  } finally {
    closeSync(fd);
  }
  return out;
}

/** Decodes a tensor of type F32, F16, BF16, Q8_0 or Q4_0 to float32. */
export function decodeTensor(file: GgufFile, info: GgufTensorInfo): Float32Array {
  const bytes = readTensorBytes(file, info);
  const n = info.shape.reduce((a, b) => a * b, 1);
  switch (info.type) {
    case GgufType.F32: {
      const out = new Float32Array(n);
      new Uint8Array(out.buffer).set(bytes);
      return out;
    }
    case GgufType.F16:
    case GgufType.BF16: {
      const u16 = new Uint16Array(n);
      new Uint8Array(u16.buffer).set(bytes);
      const out = new Float32Array(n);
      if (info.type === GgufType.F16) for (let i = 0; i < n; i++) out[i] = f16BitsToF32(u16[i]!);
      else { const u = new Uint32Array(out.buffer); for (let i = 0; i < n; i++) u[i] = u16[i]! << 16; }
      return out;
    }
    case GgufType.Q8_0: return decodeQ8_0(bytes, n);
    case GgufType.Q4_0: return decodeQ4_0(bytes, n);
    default:
      throw new LutraError(`${file.path}: tensor "${info.name}" has type ${ggufTypeName(info.type)}, which lutra cannot decode`);
  }
}

/** A metadata number (64-bit integers converted), or undefined / LutraError when absent. */
export function ggufNumber(file: GgufFile, key: string, required: true): number;
export function ggufNumber(file: GgufFile, key: string, required?: false): number | undefined;
export function ggufNumber(file: GgufFile, key: string, required = false): number | undefined {
  const v = file.metadata.get(key);
  if (v === undefined) {
    if (required) throw new LutraError(`${file.path}: GGUF metadata key "${key}" is missing`);
    return undefined;
  }
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  throw new LutraError(`${file.path}: GGUF metadata "${key}" is not a number`);
}

export function ggufString(file: GgufFile, key: string, required = false): string | undefined {
  const v = file.metadata.get(key);
  if (v === undefined) {
    if (required) throw new LutraError(`${file.path}: GGUF metadata key "${key}" is missing`);
    return undefined;
  }
  if (typeof v !== 'string') throw new LutraError(`${file.path}: GGUF metadata "${key}" is not a string`);
  return v;
}
