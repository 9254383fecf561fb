// lutra as a dependency: `npm pack`, install the tarball into a fresh project (from the local npm
// cache: no network), then `import { … } from 'lutra'` generates from the shipped demo model and
// `npx lutra generate` works.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, readdirSync, existsSync, readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const run = (cmd: string, args: string[], cwd: string) => {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout: 300_000, env: { ...process.env, npm_config_update_notifier: 'false' } });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
};

test('npm pack → install into a scratch project → import and npx lutra work', () => {
  const root = mkdtempSync(join(tmpdir(), 'lutra-pkg-'));
  try {
    // The build already ran (npm test builds first), so pack without the prepare script.
    const packed = JSON.parse(run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', root], resolve('.')));
    const files: string[] = packed[0].files.map((f: { path: string }) => f.path);
    for (const need of ['build/kernels.wasm', 'build/kernels-relaxed.wasm', 'dist/src/index.js', 'dist/src/index.d.ts', 'dist/src/cli/main.js', 'models/demo/model.safetensors', 'dist/browser/lutra.js', 'dist/browser/engine-worker.js', 'dist/browser/pool-worker.js', 'dist/browser/index.html', 'dist/browser/kernels-st.wasm']) {
      assert.ok(files.includes(need), `the package has ${need}`);
    }
    assert.ok(!files.some((f) => f.startsWith('dist/test/')), 'compiled tests stay out of the package');
    const tarball = join(root, readdirSync(root).find((f) => f.endsWith('.tgz'))!);
    const app = join(root, 'app');
    run('mkdir', ['-p', app], root);
    const ours = JSON.parse(readFileSync('package.json', 'utf8'));
    const dep = { lutra: `file:${tarball}` };
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', type: 'module', private: true, dependencies: dep }));
    // A lockfile made of this repository's own (its non-dev entries are lutra's runtime
    // dependencies): npm ci then installs from the tarballs in the local cache, asking no registry.
    const lock = JSON.parse(readFileSync('package-lock.json', 'utf8'));
    const packages: Record<string, unknown> = {
      '': { name: 'app', version: '1.0.0', dependencies: dep },
      'node_modules/lutra': { version: ours.version, resolved: `file:${tarball}`, license: ours.license, dependencies: ours.dependencies, bin: ours.bin, engines: ours.engines },
    };
    for (const [path, entry] of Object.entries(lock.packages as Record<string, { dev?: boolean }>)) {
      if (path !== '' && !entry.dev) packages[path] = entry;
    }
    writeFileSync(join(app, 'package-lock.json'), JSON.stringify({ name: 'app', version: '1.0.0', lockfileVersion: 3, requires: true, packages }));
    run('npm', ['ci', '--offline', '--no-audit', '--no-fund', '--ignore-scripts'], app);
    assert.ok(existsSync(join(app, 'node_modules', 'lutra', 'build', 'kernels.wasm')));
    writeFileSync(
      join(app, 'main.mjs'),
      "import { loadModel, DEMO_MODEL } from 'lutra';\n" +
        'const model = await loadModel(DEMO_MODEL);\n' +
        "const r = await model.complete('In the beginning', { maxTokens: 8 });\n" +
        'console.log(JSON.stringify({ text: r.text, n: r.usage.completionTokens }));\n' +
        'model.dispose();\n',
    );
    const out = JSON.parse(run(process.execPath, ['main.mjs'], app));
    assert.equal(out.n, 8);
    assert.ok(out.text.length > 0);
    // The same greedy text from the CLI of the installed package.
    const cli = run('npx', ['--offline', 'lutra', 'generate', '--prompt', 'In the beginning', '--raw', '--max-tokens', '8', '--quiet'], app);
    assert.equal(cli.trim(), out.text.trim());
    // Types resolve for TypeScript users.
    assert.ok(existsSync(join(app, 'node_modules', 'lutra', 'dist', 'src', 'index.d.ts')));
    // The browser build is reachable by its export (bundlers that target the browser pick it for 'lutra' too).
    writeFileSync(join(app, 'resolve.mjs'), "console.log(import.meta.resolve('lutra/browser'));\n");
    assert.match(run(process.execPath, ['resolve.mjs'], app).trim(), /node_modules\/lutra\/dist\/browser\/lutra\.js$/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
