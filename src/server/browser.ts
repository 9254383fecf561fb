// The browser side of `lutra serve`: the chat page and the browser build (dist/browser/) at `/`,
// the models this server offers as files the page fetches (GET /models.json lists them; GET
// /models/NAME/FILE reads one), with the cross-origin isolation headers that give the page
// SharedArrayBuffer and so the engine's threads. Only files inside the listed model folders and
// the browser build are served; names with path separators or dot-files are refused.
import { createReadStream, statSync } from 'node:fs';
import { basename, dirname, extname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isGgufPath } from '../io/gguf-source.js';

/** dist/src/server/ → dist/browser/ */
export const BROWSER_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'browser');

export interface BrowserOptions {
  /** Models the page may load: a name and a model folder (or .gguf file). */
  models: { name: string; path: string }[];
  /** Send COOP/COEP so the page is cross-origin isolated (threads); default true. */
  isolation?: boolean;
  /** The browser build to serve (default dist/browser). */
  dir?: string;
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.map': 'application/json',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.yaml': 'text/yaml; charset=utf-8',
  '.jinja': 'text/plain; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.md': 'text/markdown; charset=utf-8',
  '.png': 'image/png',
};

function safeName(name: string): boolean {
  return name !== '' && !name.startsWith('.') && !/[\\/\0]/.test(name);
}

function headers(isolation: boolean, type: string, length: number): Record<string, string | number> {
  const h: Record<string, string | number> = { 'content-type': type, 'content-length': length, 'cache-control': 'no-cache', 'cross-origin-resource-policy': 'same-origin' };
  if (isolation) {
    h['cross-origin-opener-policy'] = 'same-origin';
    h['cross-origin-embedder-policy'] = 'require-corp';
  }
  return h;
}

/** Send the file at `path`; false (nothing sent) when it is not a file. */
function sendFile(req: IncomingMessage, res: ServerResponse, path: string, isolation: boolean): boolean {
  const st = statSync(path, { throwIfNoEntry: false });
  if (!st?.isFile()) return false;
  // Last-Modified lets the page's cache see that a model file changed (src/browser/sources.ts).
  res.writeHead(200, { ...headers(isolation, TYPES[extname(path)] ?? 'application/octet-stream', st.size), 'last-modified': st.mtime.toUTCString() });
  if (req.method === 'HEAD') res.end();
  else createReadStream(path).pipe(res);
  return true;
}

function notFound(res: ServerResponse, isolation: boolean, what: string): true {
  const body = `${what}: not found\n`;
  res.writeHead(404, headers(isolation, 'text/plain; charset=utf-8', Buffer.byteLength(body)));
  res.end(body);
  return true;
}

/** Answer a GET/HEAD for the page, its files or a model file; false when the path is none of those. */
export function serveBrowser(req: IncomingMessage, res: ServerResponse, pathname: string, opts: BrowserOptions): boolean {
  if (req.method !== 'GET' && req.method !== 'HEAD') return false;
  const isolation = opts.isolation !== false;
  const dir = opts.dir ?? BROWSER_DIR;
  if (pathname === '/models.json') {
    const list = opts.models.map((m) => ({ name: m.name, url: isGgufPath(m.path) ? `models/${encodeURIComponent(m.name)}.gguf` : `models/${encodeURIComponent(m.name)}/` }));
    const body = JSON.stringify(list);
    res.writeHead(200, headers(isolation, 'application/json', Buffer.byteLength(body)));
    res.end(req.method === 'HEAD' ? undefined : body);
    return true;
  }
  const m = /^\/models\/([^/]+)(?:\/([^/]+))?$/.exec(pathname);
  if (m) {
    const first = decodeURIComponent(m[1]);
    const file = m[2] === undefined ? undefined : decodeURIComponent(m[2]);
    const gguf = file === undefined ? opts.models.find((x) => `${x.name}.gguf` === first && isGgufPath(x.path)) : undefined;
    if (gguf) return sendFile(req, res, gguf.path, isolation) || notFound(res, isolation, pathname);
    const model = opts.models.find((x) => x.name === first && !isGgufPath(x.path));
    if (!model || file === undefined || !safeName(file)) return notFound(res, isolation, pathname);
    return sendFile(req, res, join(model.path, file), isolation) || notFound(res, isolation, pathname);
  }
  const name = pathname === '/' ? 'index.html' : pathname.slice(1);
  if (!safeName(name)) return false;
  const path = join(dir, name);
  if (sendFile(req, res, path, isolation)) return true;
  return pathname === '/' && notFound(res, isolation, `${path} (the browser build: run \`npm run build\`)`);
}

/** The name a model folder or .gguf file is listed under. */
export function browserModelName(path: string): string {
  return basename(path.replace(/[/\\]+$/, '')).replace(/\.gguf$/i, '') || 'model';
}
