// lutra in a page: `const engine = await LutraEngine.create(); await engine.load(url);
// for await (const c of engine.stream('Hello')) ...`. The engine runs in a dedicated worker
// (engine-worker.js beside this file); this class turns its messages into promises and async
// iterators, with AbortSignal to stop a generation.
import type { ChatMessage } from '../api/model.js';
import type { GenerationChunk, GenerationResult } from '../runtime/generate.js';
import type { LoadProgress, PickedFile } from './sources.js';
import type { BrowserGenerateOptions, BrowserLoadOptions, EngineMemory, LoadedInfo, Reply, Request } from './protocol.js';

export type { BrowserGenerateOptions, BrowserLoadOptions, EngineMemory, LoadedInfo, LoadProgress, PickedFile, ChatMessage, GenerationChunk, GenerationResult };

/** An error the engine reported: its one-line message and lutra's error code. */
export class EngineError extends Error {
  constructor(message: string, readonly code?: string) {
    super(message);
    this.name = 'EngineError';
  }
}

type Pending = { onReply: (r: Reply) => void };

export interface StreamOptions extends BrowserGenerateOptions {
  signal?: AbortSignal;
}

function isDirectoryHandle(x: unknown): x is FileSystemDirectoryHandle {
  return typeof x === 'object' && x !== null && (x as { kind?: unknown }).kind === 'directory';
}

/** Every file under a directory handle (showDirectoryPicker(), or Origin Private File System), with its path. */
async function filesOf(dir: FileSystemDirectoryHandle, prefix: string): Promise<PickedFile[]> {
  const out: PickedFile[] = [];
  for await (const entry of (dir as unknown as { values(): AsyncIterable<FileSystemHandle> }).values()) {
    const path = `${prefix}${entry.name}`;
    if (entry.kind === 'file') out.push({ path, file: await (entry as FileSystemFileHandle).getFile() });
    else out.push(...(await filesOf(entry as FileSystemDirectoryHandle, `${path}/`)));
  }
  return out;
}

type RequestBody = Request extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;

export class LutraEngine {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private info: LoadedInfo | null = null;

  private constructor(private readonly worker: Worker) {
    worker.onmessage = (e: MessageEvent<Reply>) => this.pending.get(e.data.id)?.onReply(e.data);
    worker.onerror = (e: ErrorEvent) => {
      const err: Reply = { type: 'error', id: 0, message: `the engine worker failed: ${e.message}` };
      for (const [id, p] of this.pending) p.onReply({ ...err, id });
    };
  }

  /** Start the engine worker (engine-worker.js beside this module, unless `workerUrl` says otherwise). */
  static create(opts: { workerUrl?: string | URL } = {}): LutraEngine {
    const url = opts.workerUrl ?? new URL('./engine-worker.js', import.meta.url);
    return new LutraEngine(new Worker(url, { type: 'module', name: 'lutra engine' }));
  }

  /** The loaded model, or null. */
  get model(): LoadedInfo | null {
    return this.info;
  }

  private send(body: RequestBody, onReply: (r: Reply, done: () => void) => void): number {
    const id = this.nextId++;
    const done = () => this.pending.delete(id);
    this.pending.set(id, { onReply: (r) => onReply(r, done) });
    this.worker.postMessage({ ...body, id } as Request);
    return id;
  }

  private call<T>(body: RequestBody): Promise<T> {
    return new Promise((resolve, reject) =>
      this.send(body, (r, done) => {
        if (r.type === 'error') reject(new EngineError(r.message, r.code));
        else if (r.type === 'value') resolve(r.value as T);
        else return;
        done();
      }),
    );
  }

  /**
   * Load a model: a URL (a lutra package folder, a Hugging Face checkpoint folder or a .gguf file),
   * files the user picked (an <input type=file webkitdirectory> FileList, or one .gguf), or a
   * directory handle (showDirectoryPicker(), navigator.storage.getDirectory()).
   */
  async load(
    source: string | URL | FileList | File[] | PickedFile[] | FileSystemDirectoryHandle,
    opts: BrowserLoadOptions & { onProgress?: (p: LoadProgress) => void } = {},
  ): Promise<LoadedInfo> {
    const { onProgress, ...options } = opts;
    let url: string | undefined;
    let files: PickedFile[] | undefined;
    if (typeof source === 'string' || source instanceof URL) url = String(source);
    else if (isDirectoryHandle(source)) files = await filesOf(source, '');
    else
      files = Array.from(source as ArrayLike<File | PickedFile>, (f) =>
        f instanceof Blob ? { path: (f as File & { webkitRelativePath?: string }).webkitRelativePath || (f as File).name, file: f } : f,
      );
    return new Promise((resolve, reject) =>
      this.send({ type: 'load', url, files, options }, (r, done) => {
        if (r.type === 'progress') return onProgress?.(r.progress);
        if (r.type === 'loaded') {
          this.info = r.info;
          resolve(r.info);
        } else if (r.type === 'error') reject(new EngineError(r.message, r.code));
        done();
      }),
    );
  }

  /** Stream a completion of `prompt` (text, or token ids) or, given messages, a chat answer. */
  async *stream(input: string | number[] | { messages: ChatMessage[] }, opts: StreamOptions = {}): AsyncGenerator<GenerationChunk, GenerationResult> {
    const { signal, ...options } = opts;
    const queue: Reply[] = [];
    let wake: (() => void) | null = null;
    const id = this.send(
      typeof input === 'object' && !Array.isArray(input) ? { type: 'generate', messages: input.messages, options } : { type: 'generate', prompt: input, options },
      (r) => {
        queue.push(r);
        wake?.();
      },
    );
    const abort = () => this.worker.postMessage({ type: 'abort', id } satisfies Request);
    if (signal?.aborted) abort();
    signal?.addEventListener('abort', abort);
    let finished = false;
    try {
      for (;;) {
        while (queue.length === 0) await new Promise<void>((r) => (wake = r));
        wake = null;
        const r = queue.shift()!;
        if (r.type === 'chunk') yield r.chunk;
        else if (r.type === 'done') {
          finished = true;
          return r.result;
        } else if (r.type === 'error') {
          finished = true;
          throw new EngineError(r.message, r.code);
        }
      }
    } finally {
      signal?.removeEventListener('abort', abort);
      if (!finished) abort(); // the caller left the loop early: stop generating
      this.pending.delete(id);
    }
  }

  /** The whole completion (or chat answer) at once. */
  async complete(input: string | number[] | { messages: ChatMessage[] }, opts: StreamOptions = {}): Promise<GenerationResult> {
    const it = this.stream(input, opts);
    for (;;) {
      const r = await it.next();
      if (r.done) return r.value;
    }
  }

  tokenize(text: string): Promise<number[]> {
    return this.call({ type: 'tokenize', text });
  }

  memory(): Promise<EngineMemory> {
    return this.call({ type: 'memory' });
  }

  /** Free the model (the worker stays, ready for another load). */
  unload(): Promise<void> {
    this.info = null;
    return this.call({ type: 'unload' });
  }

  /** Stop the worker and everything in it. */
  terminate(): void {
    this.worker.terminate();
    for (const [id, p] of this.pending) p.onReply({ type: 'error', id, message: 'the engine was terminated' });
    this.pending.clear();
  }
}
