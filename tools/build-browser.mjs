// The browser build (dist/browser/): the page-side client (lutra.js), the engine's dedicated
// worker (engine-worker.js), the pool's nested workers (pool-worker.js), the chat page and the
// wasm kernels. esbuild bundles src/ directly; three modules are swapped for browser versions:
// node:fs (in-memory model files, src/browser/node-fs.ts), node:path (src/browser/node-path.ts)
// and the engine's host (src/platform/host-browser.ts). Any other node: import fails the build.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist', 'browser');
const src = (p) => join(root, 'src', p);

const browserSwaps = {
  name: 'lutra-browser',
  setup(b) {
    b.onResolve({ filter: /^node:fs(\/promises)?$/ }, () => ({ path: src('browser/node-fs.ts') }));
    b.onResolve({ filter: /^node:path$/ }, () => ({ path: src('browser/node-path.ts') }));
    b.onResolve({ filter: /\/platform\/host\.js$/ }, () => ({ path: src('platform/host-browser.ts') }));
    // The chat page loads the client as its own module (lutra.js), not a second copy of it.
    b.onResolve({ filter: /^\.\/client\.js$/ }, (a) => (a.importer.endsWith('chat.ts') ? { path: './lutra.js', external: true } : undefined));
    b.onResolve({ filter: /^node:/ }, (a) => ({ errors: [{ text: `${a.path} (imported by ${a.importer}) has no browser version` }] }));
  },
};

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
await build({
  entryPoints: {
    lutra: src('browser/client.ts'),
    'engine-worker': src('browser/engine-worker.ts'),
    'pool-worker': src('browser/pool-worker.ts'),
    chat: src('browser/chat.ts'),
  },
  outdir: out,
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  minify: true,
  sourcemap: 'linked',
  legalComments: 'none',
  logLevel: 'warning',
  plugins: [browserSwaps],
});
for (const f of ['kernels.wasm', 'kernels-relaxed.wasm', 'kernels-st.wasm', 'kernels-relaxed-st.wasm']) copyFileSync(join(root, 'build', f), join(out, f));
for (const f of ['index.html', 'example.html']) copyFileSync(src(`browser/${f}`), join(out, f));

// What a page loads (the model aside): every file but the source maps, raw and gzipped.
const files = ['index.html', 'chat.js', 'lutra.js', 'engine-worker.js', 'pool-worker.js', 'kernels.wasm', 'kernels-relaxed.wasm'];
const sizes = Object.fromEntries(files.map((f) => {
  const b = readFileSync(join(out, f));
  return [f, { bytes: b.length, gzip: gzipSync(b, { level: 9 }).length }];
}));
const total = Object.values(sizes).reduce((a, s) => ({ bytes: a.bytes + s.bytes, gzip: a.gzip + s.gzip }), { bytes: 0, gzip: 0 });
writeFileSync(join(out, 'sizes.json'), JSON.stringify({ files: sizes, total }, null, 2) + '\n');
if (process.argv.includes('--sizes')) {
  for (const [f, s] of Object.entries(sizes)) console.log(`${f.padEnd(22)} ${(s.bytes / 1024).toFixed(1).padStart(8)} KB  ${(s.gzip / 1024).toFixed(1).padStart(7)} KB gz`);
  console.log(`${'total'.padEnd(22)} ${(total.bytes / 1024).toFixed(1).padStart(8)} KB  ${(total.gzip / 1024).toFixed(1).padStart(7)} KB gz`);
}
