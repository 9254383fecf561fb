// safetensors: [u64 LE header length N][N bytes JSON header][data]. Tensors are read lazily,
// each into its own buffer, only when asked for.
import { closeSync, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import { LutraError } from '../util/errors.js';
import { writeOutput, yieldToEvents } from '../util/atomic-output.js';
import { numel, type PlainDtype } from '../model/weight.js';

/** Plain float dtypes hold weights; I8/U8 hold quantization codes in lutra packages. */
export type StDtype = PlainDtype | 'i8' | 'u8';

const DTYPES: Record<string, { dtype: StDtype; bytes: number }> = {
  F32: { dtype: 'f32', bytes: 4 },
  F16: { dtype: 'f16', bytes: 2 },
  BF16: { dtype: 'bf16', bytes: 2 },
  I8: { dtype: 'i8', bytes: 1 },
  U8: { dtype: 'u8', bytes: 1 },
};
const BYTES: Record<StDtype, number> = { f32: 4, f16: 2, bf16: 2, i8: 1, u8: 1 };
const NAMES: Record<StDtype, string> = { f32: 'F32', f16: 'F16', bf16: 'BF16', i8: 'I8', u8: 'U8' };
/** The JSON header may not exceed this (safetensors' own limit is 100 MB). */
export const MAX_HEADER_BYTES = 100 * 2 ** 20;

function isCount(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

/** Bytes all at once or in consecutive pieces. */
export type Bytes = Uint8Array | AsyncIterable<Uint8Array>;

export interface SafetensorsEntry {
  name: string;
  dtype: StDtype;
  shape: number[];
  /** Absolute byte offset in the file. */
  offset: number;
  nbytes: number;
}

export class SafetensorsFile {
  readonly entries = new Map<string, SafetensorsEntry>();
  readonly metadata: Record<string, string> = {};
  private constructor(readonly path: string, private fd: number) {}

  static open(path: string): SafetensorsFile {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (e) {
      throw new LutraError(`${path}: cannot open (${(e as NodeJS.ErrnoException).code ?? e}); expected a safetensors weight file`);
    }
    const file = new SafetensorsFile(path, fd);
    try {
      file.parseHeader();
    } catch (e) {
      closeSync(fd);
      throw e;
    }
    return file;
  }

  private parseHeader(): void {
    const size = fstatSync(this.fd).size;
    if (size < 8) throw new LutraError(`${this.path}: file is ${size} bytes; a safetensors file starts with an 8-byte header length`);
    const lenBuf = new Uint8Array(8);
    readSync(this.fd, lenBuf, 0, 8, 0);
    const headerLen = Number(new DataView(lenBuf.buffer).getBigUint64(0, true));
    if (headerLen > MAX_HEADER_BYTES) {
      throw new LutraError(`${this.path}: header length ${headerLen} exceeds the ${MAX_HEADER_BYTES}-byte limit; not a safetensors file`);
    }
    if (headerLen <= 0 || 8 + headerLen > size) {
      throw new LutraError(`${this.path}: header length ${headerLen} does not fit a ${size}-byte file; not a safetensors file, or truncated`);
    }
    const hb = new Uint8Array(headerLen);
    readSync(this.fd, hb, 0, headerLen, 8);
    let header: Record<string, any>;
    try {
      header = JSON.parse(new TextDecoder().decode(hb));
    } catch {
      throw new LutraError(`${this.path}: header is not valid JSON; not a safetensors file`);
    }
    if (typeof header !== 'object' || header === null || Array.isArray(header)) {
      throw new LutraError(`${this.path}: header is ${Array.isArray(header) ? 'an array' : JSON.stringify(header)}; expected a JSON object of tensor entries`);
    }
    const dataStart = 8 + headerLen;
    const spans: { name: string; begin: number; end: number }[] = [];
    for (const [name, info] of Object.entries(header)) {
      if (name === '__metadata__') {
        if (typeof info !== 'object' || info === null || Array.isArray(info)) {
          throw new LutraError(`${this.path}: "__metadata__" is ${JSON.stringify(info)}; expected an object of strings`);
        }
        Object.assign(this.metadata, info);
        continue;
      }
      const at = `${this.path}: tensor "${name}"`;
      if (typeof info !== 'object' || info === null || Array.isArray(info)) {
        throw new LutraError(`${at}: entry is ${JSON.stringify(info)}; expected an object with dtype, shape and data_offsets`);
      }
      const dt = DTYPES[info.dtype];
      if (!dt) throw new LutraError(`${at}: dtype ${JSON.stringify(info.dtype)}; expected F32, F16, BF16, I8 or U8`);
      const shape = info.shape as unknown;
      if (!Array.isArray(shape) || !shape.every(isCount)) {
        throw new LutraError(`${at}: shape ${JSON.stringify(shape) ?? 'is missing'}; expected an array of non-negative integers`);
      }
      const offsets = info.data_offsets as unknown;
      if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount) || offsets[0] > offsets[1]) {
        throw new LutraError(`${at}: data_offsets ${JSON.stringify(offsets) ?? 'is missing'}; expected [begin, end], two non-negative integers with begin ≤ end`);
      }
      const [begin, end] = offsets as [number, number];
      const nbytes = numel(shape) * dt.bytes;
      if (end - begin !== nbytes) {
        throw new LutraError(`${at}: data_offsets [${begin}, ${end}] span ${end - begin} bytes but shape [${shape}] of ${info.dtype} needs ${nbytes}`);
      }
      if (dataStart + end > size) {
        throw new LutraError(`${this.path}: truncated: tensor "${name}" ends at byte ${dataStart + end} but the file has ${size} bytes`);
      }
      spans.push({ name, begin, end });
      this.entries.set(name, { name, dtype: dt.dtype, shape, offset: dataStart + begin, nbytes });
    }
    // Tensors may leave gaps, but no two may share bytes.
    spans.sort((a, b) => a.begin - b.begin || a.end - b.end);
    for (let i = 1; i < spans.length; i++) {
      const prev = spans[i - 1];
      const cur = spans[i];
      if (cur.begin < prev.end) {
        throw new LutraError(
          `${this.path}: tensor "${cur.name}": data_offsets [${cur.begin}, ${cur.end}] overlap tensor "${prev.name}" [${prev.begin}, ${prev.end}]; each tensor needs its own bytes`,
        );
      }
    }
  }

  /** Read one tensor's bytes into a fresh, aligned buffer. */
  read(name: string): Uint8Array {
    const e = this.entries.get(name);
    if (!e) throw new LutraError(`${this.path}: no tensor named "${name}"`);
    const out = new Uint8Array(new ArrayBuffer(e.nbytes));
    let done = 0;
    while (done < e.nbytes) {
      const n = readSync(this.fd, out, done, Math.min(e.nbytes - done, 1 << 30), e.offset + done);
      if (n === 0) throw new LutraError(`${this.path}: truncated while reading tensor "${name}"`);
      done += n;
    }
    return out;
  }

  close(): void {
    closeSync(this.fd);
  }
}

export interface TensorToWrite {
  name: string;
  dtype: StDtype;
  shape: number[];
  /**
   * Produces the raw little-endian bytes, called once when the tensor is written: all at once, or
   * in consecutive pieces (a tensor over 4 GiB cannot be one typed array).
   */
  bytes: () => Bytes | Promise<Bytes>;
}

/** Bytes per write call: the writer yields to the event loop between chunks, so a signal is handled. */
const WRITE_CHUNK = 1 << 26;

/**
 * Write a safetensors file under a temporary name renamed at the end (an existing file is
 * replaced), so an error or an interruption leaves no half file. Yields to the event loop
 * between tensors and between chunks of a large one.
 */
export async function writeSafetensors(path: string, tensors: TensorToWrite[], metadata: Record<string, string> = { format: 'pt' }): Promise<void> {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const t of tensors) {
    const nbytes = numel(t.shape) * BYTES[t.dtype];
    header[t.name] = { dtype: NAMES[t.dtype], shape: t.shape, data_offsets: [offset, offset + nbytes] };
    offset += nbytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  await writeOutput(path, { force: true, kind: 'file' }, async (tmp) => {
    const fd = openSync(tmp, 'w');
    try {
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
      writeSync(fd, len);
      writeSync(fd, Buffer.from(json, 'utf8'));
      for (const t of tensors) {
        await yieldToEvents();
        const made = await t.bytes();
        const pieces = made instanceof Uint8Array ? [made] : made;
        let total = 0;
        for await (const b of pieces) {
          for (let done = 0; done < b.byteLength; ) {
            if (done > 0) await yieldToEvents();
            done += writeSync(fd, b, done, Math.min(WRITE_CHUNK, b.byteLength - done));
          }
          total += b.byteLength;
        }
        const expected = numel(t.shape) * BYTES[t.dtype];
        if (total !== expected) throw new Error(`internal: tensor ${t.name} produced ${total} bytes, expected ${expected}`);
      }
    } finally {
      closeSync(fd);
    }
  });
}
