// The part of Node's fs that lutra's readers call, over the in-memory files of vfs.ts: the browser
// build maps `node:fs` and `node:fs/promises` here. Writing is not available in a page.
import { getFile, isDirectory, list, readInto, type VirtualFile } from './vfs.js';

function errno(code: string, syscall: string, path: string): Error {
  return Object.assign(new Error(`${code}: ${syscall} '${path}'`), { code, syscall, path });
}

function notInBrowser(what: string): never {
  throw new Error(`${what} is not available in the browser build of lutra (it reads models, it does not write files)`);
}

export function existsSync(path: string): boolean {
  return getFile(path) !== undefined || isDirectory(path);
}

interface Stats {
  size: number;
  isFile(): boolean;
  isDirectory(): boolean;
}

export function statSync(path: string): Stats {
  const f = getFile(path);
  if (f) return { size: f.size, isFile: () => true, isDirectory: () => false };
  if (isDirectory(path)) return { size: 0, isFile: () => false, isDirectory: () => true };
  throw errno('ENOENT', 'stat', path);
}

export function readdirSync(path: string): string[] {
  if (!isDirectory(path)) throw errno('ENOENT', 'scandir', path);
  return list(path);
}

export function readFileSync(path: string, encoding?: string | { encoding?: string }): Uint8Array | string {
  const f = getFile(path);
  if (!f) throw errno(isDirectory(path) ? 'EISDIR' : 'ENOENT', 'open', path);
  const out = new Uint8Array(f.size);
  readInto(f, out, 0, f.size, 0);
  const enc = typeof encoding === 'string' ? encoding : encoding?.encoding;
  return enc ? new TextDecoder('utf-8', { ignoreBOM: true }).decode(out) : out; // a leading U+FEFF stays, as in Node
}

const open = new Map<number, { path: string; file: VirtualFile }>();
let nextFd = 3;

export function openSync(path: string, flags = 'r'): number {
  if (flags !== 'r') notInBrowser(`opening ${path} for writing`);
  const f = getFile(path);
  if (!f) throw errno(isDirectory(path) ? 'EISDIR' : 'ENOENT', 'open', path);
  const fd = nextFd++;
  open.set(fd, { path, file: f });
  return fd;
}

function fileOf(fd: number): VirtualFile {
  const o = open.get(fd);
  if (!o) throw errno('EBADF', 'read', String(fd));
  return o.file;
}

export function readSync(fd: number, buffer: Uint8Array, offset: number, length: number, position: number | null): number {
  return readInto(fileOf(fd), buffer, offset, length, position ?? 0);
}

export function fstatSync(fd: number): Stats {
  const f = fileOf(fd);
  return { size: f.size, isFile: () => true, isDirectory: () => false };
}

export function closeSync(fd: number): void {
  open.delete(fd);
}

export const writeSync = (): never => notInBrowser('writeSync');
export const writeFileSync = (): never => notInBrowser('writeFileSync');
export const mkdirSync = (): never => notInBrowser('mkdirSync');
export const copyFileSync = (): never => notInBrowser('copyFileSync');
export const rmSync = (): never => notInBrowser('rmSync');
export const linkSync = (): never => notInBrowser('linkSync');
export const renameSync = (): never => notInBrowser('renameSync');
export const unlinkSync = (): never => notInBrowser('unlinkSync');
// node:fs/promises
export const promisesOpen = (): never => notInBrowser('fs/promises open');
export { promisesOpen as open };
