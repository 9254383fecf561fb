// The README's library examples run as written (importing 'lutra' by name) and print what the
// README says they print.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';

/** Each ```js block that imports 'lutra', with the ```text block right after it. */
function examples(): { code: string; output: string }[] {
  const md = readFileSync('README.md', 'utf8');
  const re = /```js\n([\s\S]*?)```\s*```text\n([\s\S]*?)```/g;
  const out = [];
  for (const m of md.matchAll(re)) if (/from 'lutra'/.test(m[1])) out.push({ code: m[1], output: m[2] });
  return out;
}

test('README library examples print what the README shows', () => {
  const list = examples();
  assert.ok(list.length >= 3, `found ${list.length} examples`);
  // Inside the package folder, so that `import 'lutra'` resolves to this package by its name.
  const dir = resolve('dist/readme-examples');
  mkdirSync(dir, { recursive: true });
  try {
    list.forEach(({ code, output }, i) => {
      const file = join(dir, `example-${i + 1}.mjs`);
      writeFileSync(file, code);
      const r = spawnSync(process.execPath, [file], { encoding: 'utf8', timeout: 120_000 });
      assert.equal(r.status, 0, `example ${i + 1} failed:\n${r.stderr}`);
      assert.equal(r.stdout.trimEnd(), output.trimEnd(), `example ${i + 1} output`);
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('README: the browser example is the page the browser tests load, verbatim', () => {
  const md = readFileSync('README.md', 'utf8');
  const block = /```html\n([\s\S]*?)```/.exec(md.slice(md.indexOf('## In the browser')));
  assert.ok(block, 'an html block in the In the browser section');
  assert.equal(block[1], readFileSync('src/browser/example.html', 'utf8'));
});
