// Files held in memory for the browser build: the model files a page fetched or the user picked,
// each kept as a list of chunks (no single ArrayBuffer for a whole shard, which is what fails on
// big embeddings), and read through the small part of Node's fs API that lutra's readers use
// (node-fs.ts). Paths are absolute POSIX paths such as /models/demo/config.json.

export interface VirtualFile {
  chunks: Uint8Array[];
  /** Start offset of each chunk in the file. */
  starts: number[];
  size: number;
}

const files = new Map<string, VirtualFile>();
/** The largest chunk ever mounted: the largest buffer model files took on their way in. */
let largest = 0;

export function mountFile(path: string, chunks: Uint8Array[]): VirtualFile {
  const starts: number[] = [];
  let size = 0;
  for (const c of chunks) {
    largest = Math.max(largest, c.length);
    starts.push(size);
    size += c.length;
  }
  const f = { chunks, starts, size };
  files.set(path, f);
  return f;
}

/** Forget every file under `dir` (their bytes can then be collected). */
export function unmount(dir: string): void {
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  for (const p of [...files.keys()]) if (p === dir || p.startsWith(prefix)) files.delete(p);
}

export function getFile(path: string): VirtualFile | undefined {
  return files.get(path);
}

export function isDirectory(path: string): boolean {
  const prefix = path.endsWith('/') ? path : `${path}/`;
  for (const p of files.keys()) if (p.startsWith(prefix)) return true;
  return false;
}

export function list(dir: string): string[] {
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  const names = new Set<string>();
  for (const p of files.keys()) if (p.startsWith(prefix)) names.add(p.slice(prefix.length).split('/')[0]);
  return [...names];
}

export function largestChunk(): number {
  return largest;
}

/** Bytes held in all mounted files. */
export function mountedBytes(): number {
  let n = 0;
  for (const f of files.values()) n += f.size;
  return n;
}

/** Copy `length` bytes from `position` of `f` into dst[offset...]; returns the bytes copied. */
export function readInto(f: VirtualFile, dst: Uint8Array, offset: number, length: number, position: number): number {
  const end = Math.min(f.size, position + length);
  if (position >= end) return 0;
  // The chunk holding `position`: binary search over chunk starts.
  let lo = 0;
  let hi = f.starts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (f.starts[mid] <= position) lo = mid;
    else hi = mid - 1;
  }
  let pos = position;
  let out = offset;
  for (let i = lo; pos < end; i++) {
    const c = f.chunks[i];
    const from = pos - f.starts[i];
    const n = Math.min(c.length - from, end - pos);
    dst.set(c.subarray(from, from + n), out);
    pos += n;
    out += n;
  }
  return end - position;
}
