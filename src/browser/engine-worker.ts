// The engine in a dedicated worker: the pool's caller blocks in Atomics.wait, which a page's main
// thread may not do, so the page talks to this worker by messages (client.ts). It loads a model
// into memory (sources.ts), runs it with the ordinary library (api/model.ts) and streams chunks.
import { hostCores, hostSharedMemory, preloadKernels } from '../platform/host-browser.js';
import { loadModel, type LutraModel } from '../api/model.js';
import { LutraError } from '../util/errors.js';
import { isGgufPath } from '../io/gguf-source.js';
import { fetchModel, mountPicked, type LoadProgress } from './sources.js';
import { largestChunk, mountedBytes, unmount } from './vfs.js';
import type { EngineMemory, LoadedInfo, Reply, Request } from './protocol.js';

const scope = self as unknown as { postMessage(r: Reply): void; onmessage: ((e: MessageEvent<Request>) => void) | null };
const post = (r: Reply) => scope.postMessage(r);

let model: LutraModel | null = null;
/** The loaded source's mount path and what to call it in messages (its URL or picked folder). */
let mounted: { path: string; base: string } | null = null;
let peakFileBytes = 0;
const running = new Map<number, AbortController>();
let kernels: Promise<void> | null = null;

function memory(): EngineMemory {
  const backend = model?.engine.backend as { memoryBytes?: number } | undefined;
  const heap = (performance as { memory?: { usedJSHeapSize: number } }).memory?.usedJSHeapSize ?? 0;
  return { wasmBytes: backend?.memoryBytes ?? 0, fileBytes: mountedBytes(), peakFileBytes, largestChunkBytes: largestChunk(), jsHeapBytes: heap };
}

/** Error text with the in-memory paths put back as the URLs or file names they came from. */
function describe(e: unknown, source?: { path: string; base: string } | null): string {
  let msg = e instanceof Error ? e.message : String(e);
  if (source) {
    // A folder's files (/m1/demo/config.json → its URL); a .gguf file is itself the source.
    const file = isGgufPath(source.path);
    const from = file ? source.path : `${source.path}/`;
    const to = file || source.base.endsWith('/') ? source.base : `${source.base}/`;
    msg = msg.split(from).join(to);
  }
  return msg.split('\n')[0];
}

async function load(req: Extract<Request, { type: 'load' }>): Promise<void> {
  const o = req.options ?? {};
  kernels ??= preloadKernels(new URL('./', import.meta.url));
  await kernels;
  model?.dispose();
  model = null;
  const shared = hostSharedMemory();
  // Without cross-origin isolation there is no SharedArrayBuffer, so no threads: say so.
  const threads = shared ? (o.threads ?? Math.min(hostCores(), 8)) : 1;
  const notice = shared ? undefined : `running on 1 thread: the page is not cross-origin isolated (serve it with Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp for threads)`;
  const onProgress = (progress: LoadProgress) => post({ type: 'progress', id: req.id, progress });
  const src = req.files ? await mountPicked(req.files, { onProgress }) : await fetchModel(req.url!, { onProgress, cache: o.cache });
  peakFileBytes = mountedBytes();
  try {
    model = await loadModel(src.path, { backend: 'wasm', threads, contextLength: o.contextLength, checkWeights: o.checkWeights, simd: o.simd, spin: o.spin, repack: o.repack });
  } catch (e) {
    throw new LutraError(describe(e, src), e instanceof LutraError ? e.code : 'invalid_model');
  } finally {
    unmount(src.path); // the weights are in wasm memory now (row readers keep what they read from)
  }
  mounted = src;
  const info: LoadedInfo = { ...model.info, path: src.base, source: src.base, crossOriginIsolated: shared, notice, memory: memory() };
  post({ type: 'loaded', id: req.id, info });
}

async function generate(req: Extract<Request, { type: 'generate' }>): Promise<void> {
  if (!model) throw new LutraError('no model is loaded: call load() first');
  const ctl = new AbortController();
  running.set(req.id, ctl);
  try {
    const opts = { ...req.options, signal: ctl.signal };
    const it = req.messages ? model.streamChat(req.messages, opts) : model.stream(req.prompt ?? '', opts);
    for (;;) {
      const r = await it.next();
      if (r.done) {
        post({ type: 'done', id: req.id, result: r.value, memory: memory() });
        return;
      }
      post({ type: 'chunk', id: req.id, chunk: r.value });
    }
  } finally {
    running.delete(req.id);
  }
}

async function handle(req: Request): Promise<void> {
  switch (req.type) {
    case 'load':
      return load(req);
    case 'generate':
      return generate(req);
    case 'abort':
      running.get(req.id)?.abort();
      return;
    case 'tokenize':
      if (!model) throw new LutraError('no model is loaded: call load() first');
      post({ type: 'value', id: req.id, value: model.tokenize(req.text) });
      return;
    case 'memory':
      post({ type: 'value', id: req.id, value: memory() });
      return;
    case 'unload':
      model?.dispose();
      model = null;
      mounted = null;
      post({ type: 'value', id: req.id, value: null });
      return;
    default:
      throw new LutraError(`unknown request ${JSON.stringify((req as { type?: unknown }).type)}`);
  }
}

scope.onmessage = (e: MessageEvent<Request>) => {
  const req = e.data;
  handle(req).catch((err: unknown) => {
    post({ type: 'error', id: req.id, message: describe(err, mounted), code: err instanceof LutraError ? err.code : undefined });
  });
};
