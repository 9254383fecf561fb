// The POSIX path helpers lutra's readers use, for the browser build (mapped from `node:path`).
function normalize(path: string): string {
  const abs = path.startsWith('/');
  const out: string[] = [];
  for (const part of path.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') out.pop();
    else out.push(part);
  }
  return (abs ? '/' : '') + out.join('/') || (abs ? '/' : '.');
}

export function join(...parts: string[]): string {
  return normalize(parts.filter((p) => p !== '').join('/'));
}

export function resolve(...parts: string[]): string {
  let path = '';
  for (const p of parts) path = p.startsWith('/') ? p : `${path}/${p}`;
  return normalize(path.startsWith('/') ? path : `/${path}`);
}

export function basename(path: string, ext?: string): string {
  const b = path.replace(/\/+$/, '').split('/').pop() ?? '';
  return ext && b.endsWith(ext) ? b.slice(0, -ext.length) : b;
}

export function dirname(path: string): string {
  const p = path.replace(/\/+$/, '');
  const i = p.lastIndexOf('/');
  if (i < 0) return '.';
  return i === 0 ? '/' : p.slice(0, i);
}

export function extname(path: string): string {
  const b = basename(path);
  const i = b.lastIndexOf('.');
  return i <= 0 ? '' : b.slice(i);
}

export const sep = '/';
export default { join, resolve, basename, dirname, extname, sep };
