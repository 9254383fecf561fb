// Model files into the page's memory (vfs.ts), from a URL or from files the user picked, so the
// ordinary loaders (package, checkpoint, GGUF) read them. Every file arrives as a stream and is
// kept in chunks of at most CHUNK bytes: no ArrayBuffer as large as a shard, let alone the model.
// Fetched files go through Cache Storage, so a reload reads them from disk, not the network.
import { getFile, mountFile, readInto } from './vfs.js';
import { isGgufPath } from '../io/gguf-source.js';

const CHUNK = 16 << 20;
const CACHE_NAME = 'lutra-models-v1';

/** Small files a model folder may have beside its weights; each is optional. */
const SIDE_FILES = [
  'config.json',
  'meta.yaml',
  'model.safetensors.index.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'chat_template.jinja',
  'generation_config.json',
  'special_tokens_map.json',
];

export interface LoadProgress {
  file: string;
  /** Bytes of this file received so far, and its size (0 when the server did not say). */
  loaded: number;
  total: number;
  /** Files done and the number of files to fetch. */
  done: number;
  files: number;
  fromCache: boolean;
}

export interface FetchOptions {
  onProgress?: (p: LoadProgress) => void;
  signal?: AbortSignal;
  /** Use Cache Storage (default true where the page has it). */
  cache?: boolean;
}

/** Read a stream into chunks of at most CHUNK bytes. */
async function readChunks(body: ReadableStream<Uint8Array>, sizeHint: number, onBytes: (n: number) => void): Promise<Uint8Array[]> {
  const chunks: Uint8Array[] = [];
  const reader = body.getReader();
  let cur = new Uint8Array(Math.min(CHUNK, Math.max(sizeHint, 1 << 16)));
  let fill = 0;
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    let off = 0;
    while (off < value.length) {
      if (fill === cur.length) {
        chunks.push(cur);
        cur = new Uint8Array(Math.min(CHUNK, Math.max(sizeHint - total, 1 << 16)));
        fill = 0;
      }
      const n = Math.min(cur.length - fill, value.length - off);
      cur.set(value.subarray(off, off + n), fill);
      fill += n;
      off += n;
      total += n;
    }
    onBytes(total);
  }
  if (fill > 0) chunks.push(fill === cur.length ? cur : cur.slice(0, fill));
  return chunks;
}

async function openCache(use: boolean | undefined): Promise<Cache | null> {
  if (use === false || typeof caches === 'undefined') return null;
  try {
    return await caches.open(CACHE_NAME);
  } catch {
    return null; // an opaque origin or storage turned off: fetch every time
  }
}

/**
 * Whether a cached response still is what the server has: a HEAD request compares size and
 * Last-Modified. Unreachable server: yes (the cache is what makes a page work offline).
 */
async function fresh(url: string, hit: Response, signal?: AbortSignal): Promise<boolean> {
  let head: Response;
  try {
    head = await fetch(url, { method: 'HEAD', signal });
  } catch {
    return !signal?.aborted;
  }
  if (!head.ok) return head.status >= 500;
  const same = (h: string) => head.headers.get(h) === hit.headers.get(h);
  return same('content-length') && same('last-modified');
}

/** GET `url` (through the cache, revalidated); null for a 404 when `optional`. */
async function get(url: string, cache: Cache | null, optional: boolean, signal?: AbortSignal): Promise<{ res: Response; fromCache: boolean } | null> {
  const hit = cache ? await cache.match(url) : undefined;
  if (hit && (await fresh(url, hit, signal))) return { res: hit, fromCache: true };
  let res: Response;
  try {
    res = await fetch(url, { signal });
  } catch (e) {
    if (signal?.aborted) throw e;
    throw new Error(`${url}: cannot fetch (${(e as Error).message})`);
  }
  if (res.status === 404 && optional) return null;
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status} ${res.statusText}`.trim());
  return { res, fromCache: false };
}

/** Fetch one file into the virtual file system at `path`. */
async function fetchInto(url: string, path: string, cache: Cache | null, optional: boolean, progress: (loaded: number, total: number, fromCache: boolean) => void, signal?: AbortSignal): Promise<boolean> {
  const got = await get(url, cache, optional, signal);
  if (!got) return false;
  const { res, fromCache } = got;
  const total = Number(res.headers.get('content-length') ?? 0);
  // Cache what we fetch: a second reader of the same response (tee) writes it to Cache Storage.
  const stored = cache && !fromCache ? cache.put(url, res.clone()).catch(() => undefined) : null;
  const chunks = await readChunks(res.body!, total, (n) => progress(n, total, fromCache));
  await stored;
  const size = chunks.reduce((a, c) => a + c.length, 0);
  if (total > 0 && size !== total) throw new Error(`${url}: received ${size} of ${total} bytes (the transfer was cut)`);
  mountFile(path, chunks);
  progress(size, size, fromCache);
  return true;
}

function modelName(url: URL): string {
  const parts = url.pathname.split('/').filter(Boolean);
  return parts.length ? decodeURIComponent(parts[parts.length - 1]) : 'model';
}

let mounts = 0;

/**
 * Fetch a model from `source` (a folder URL: a lutra package or a Hugging Face checkpoint, or a
 * .gguf URL) into memory; returns the path the loaders open.
 */
export async function fetchModel(source: string | URL, opts: FetchOptions = {}): Promise<{ path: string; base: string }> {
  const url = new URL(source, (globalThis as { location?: Location }).location?.href);
  const cache = await openCache(opts.cache);
  const root = `/m${++mounts}`;
  const report = (file: string, done: number, files: number) => (loaded: number, total: number, fromCache: boolean) =>
    opts.onProgress?.({ file, loaded, total, done, files, fromCache });
  if (isGgufPath(url.pathname)) {
    const path = `${root}/${modelName(url)}`;
    await fetchInto(url.href, path, cache, false, report(url.href, 0, 1), opts.signal);
    return { path, base: url.href };
  }
  const base = url.href.endsWith('/') ? url.href : `${url.href}/`;
  const dir = `${root}/${modelName(url)}`;
  const found = await Promise.all(
    SIDE_FILES.map(async (f) => ((await fetchInto(new URL(f, base).href, `${dir}/${f}`, cache, true, () => undefined, opts.signal)) ? f : null)),
  );
  if (!found.includes('config.json')) throw new Error(`${new URL('config.json', base).href}: not found; expected a model folder (a lutra package or a Hugging Face checkpoint) or a .gguf file`);
  let shards = ['model.safetensors'];
  if (found.includes('model.safetensors.index.json')) {
    const f = getFile(`${dir}/model.safetensors.index.json`)!;
    const bytes = new Uint8Array(f.size);
    readInto(f, bytes, 0, f.size, 0);
    try {
      const map = (JSON.parse(new TextDecoder().decode(bytes)) as { weight_map?: Record<string, string> }).weight_map ?? {};
      shards = [...new Set(Object.values(map))];
    } catch (e) {
      throw new Error(`${new URL('model.safetensors.index.json', base).href}: not valid JSON (${(e as Error).message})`);
    }
  }
  for (let i = 0; i < shards.length; i++) {
    const u = new URL(shards[i], base).href;
    await fetchInto(u, `${dir}/${shards[i]}`, cache, false, report(u, i, shards.length), opts.signal);
  }
  return { path: dir, base };
}

/** A file the user picked, with its path inside the picked folder (webkitRelativePath) or its name. */
export interface PickedFile {
  path: string;
  file: Blob;
}

/** Mount files the user picked (a folder's files, or one .gguf) and return the path to load. */
export async function mountPicked(files: PickedFile[], opts: FetchOptions = {}): Promise<{ path: string; base: string }> {
  if (files.length === 0) throw new Error('no files were picked');
  const root = `/m${++mounts}`;
  const ggufs = files.filter((f) => isGgufPath(f.path));
  for (let i = 0; i < files.length; i++) {
    const { path, file } = files[i];
    const chunks: Uint8Array[] = [];
    for (let off = 0; off < file.size; off += CHUNK) {
      chunks.push(new Uint8Array(await file.slice(off, Math.min(file.size, off + CHUNK)).arrayBuffer()));
      opts.onProgress?.({ file: path, loaded: Math.min(file.size, off + CHUNK), total: file.size, done: i, files: files.length, fromCache: false });
    }
    mountFile(`${root}/${path.replace(/^\/+/, '')}`, chunks);
  }
  if (ggufs.length === 1 && files.length === 1) return { path: `${root}/${ggufs[0].path.replace(/^\/+/, '')}`, base: ggufs[0].path };
  // A folder: the directory that holds config.json.
  const config = files.find((f) => f.path.split('/').pop() === 'config.json');
  if (!config) throw new Error(`the picked files have no config.json: pick a model folder (a lutra package or a Hugging Face checkpoint) or one .gguf file`);
  const dir = config.path.split('/').slice(0, -1).join('/');
  return { path: dir ? `${root}/${dir}` : root, base: dir || '.' };
}
