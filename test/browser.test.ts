// lutra in a real headless Chromium, pages served by lutra's own server on 127.0.0.1: the page's
// greedy output equals the Node library's (2 threads cross-origin isolated, 1 without), a
// 270m-shaped int4:32 package loads in chunks and generates the same tokens as Node, the chat
// page streams, stops and answers again (checked on a screenshot), damaged packages give a
// clear error in the page, and a reload reads the model from Cache Storage.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readdirSync, rmSync, statSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { spawnSync } from 'node:child_process';
import type { Page } from 'playwright-core';
import { loadModel, createServer, type LutraModel, type LutraServer } from '../src/index.js';
import { DEFAULT_MODEL } from '../src/cli/common.js';
import { writeFixture } from '../src/model/fixture.js';
import { convert } from '../src/quant/convert.js';
import { buildPlan } from '../src/quant/plan.js';
import { launchChromium, newPage, pixelsDiffering, rendererPeakBytes, type RunningBrowser } from './browser-helpers.js';

let root: string;
let pkg270: string;
let demo8: string;
let lib: LutraModel;
let isolated: LutraServer;
let plain: LutraServer;
let chromium: RunningBrowser;

interface ExampleRun {
  info: { threads: number; crossOriginIsolated: boolean; notice?: string; memory: { wasmBytes: number; peakFileBytes: number; largestChunkBytes: number; fileBytes: number } };
  result: { tokenIds: number[]; text: string };
}

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'lutra-browser-'));
  const ckpt = join(root, 'ckpt270');
  await writeFixture(ckpt, 'gemma-3-270m', 0);
  pkg270 = join(root, 'gemma-3-270m-int4');
  await convert({ src: ckpt, out: pkg270, plan: buildPlan({ quant: ['all=int4:32'], weightThreshold: 0 }), command: 'test' });
  rmSync(ckpt, { recursive: true, force: true });
  demo8 = join(root, 'demo-int8');
  await convert({ src: DEFAULT_MODEL, out: demo8, plan: buildPlan({ quant: ['all=int8:32'], weightThreshold: 0 }), command: 'test' });
  // Damaged copies: a shard cut in half, and a meta.yaml that is not YAML.
  const cut = join(root, 'cut-shard');
  cpSync(demo8, cut, { recursive: true });
  const shard = join(cut, 'model-00001-of-00001.safetensors');
  truncateSync(shard, Math.floor(statSync(shard).size / 2));
  const badMeta = join(root, 'bad-meta');
  cpSync(demo8, badMeta, { recursive: true });
  writeFileSync(join(badMeta, 'meta.yaml'), 'format_version: 1\ntensors: [ {name: "x", format: int8:32\n');
  const gguf = spawnSync(process.execPath, [resolve('dist/src/cli/main.js'), 'export-gguf', '--model', demo8, '--out', join(root, 'demo-q8_0.gguf'), '--type', 'q8_0'], { encoding: 'utf8' });
  assert.equal(gguf.status, 0, gguf.stderr);
  lib = await loadModel(DEFAULT_MODEL, { threads: 2 });
  const models = [
    { name: 'demo-q8_0', path: join(root, 'demo-q8_0.gguf') },
    { name: 'demo', path: DEFAULT_MODEL },
    { name: 'demo-int8', path: demo8 },
    { name: 'gemma-3-270m-int4', path: pkg270 },
    { name: 'cut-shard', path: cut },
    { name: 'bad-meta', path: badMeta },
  ];
  isolated = await createServer({ model: lib, port: 0, browser: { models } });
  plain = await createServer({ model: lib, port: 0, browser: { models, isolation: false } });
  chromium = await launchChromium();
});

after(async () => {
  await chromium?.close();
  await isolated?.close(0);
  await plain?.close(0);
  lib?.dispose();
  if (root) rmSync(root, { recursive: true, force: true });
});

async function runExample(page: Page, base: string, query: Record<string, string>): Promise<ExampleRun> {
  await page.goto(`${base}/example.html?${new URLSearchParams(query)}`);
  return page.evaluate(() => (window as unknown as { lutraExample: Promise<ExampleRun> }).lutraExample);
}

test('the demo model in the page: greedy output equals the Node library token for token, 2 threads isolated and 1 without', async () => {
  const prompt = 'And it came to pass';
  const want = await lib.complete(prompt, { maxTokens: 40, temperature: 0 });
  assert.equal(want.tokenIds.length, 40, 'the Node run generated all 40 tokens');
  for (const [server, threads] of [[isolated, 2], [plain, 1]] as const) {
    const { page, errors } = await newPage(chromium);
    const run = await runExample(page, server.url, { model: 'models/demo/', prompt, max_tokens: '40' });
    assert.deepEqual(errors, []);
    assert.equal(run.info.crossOriginIsolated, threads === 2);
    assert.equal(run.info.threads, threads);
    if (threads === 1) assert.match(run.info.notice ?? '', /not cross-origin isolated/, 'the page says why it runs on one thread');
    assert.deepEqual(run.result.tokenIds, want.tokenIds, `${threads} thread(s): the page's tokens are the library's`);
    assert.equal(run.result.text, want.text);
    await page.context().close();
  }
});

test('a 270m-shaped int4:32 package loads in chunks of at most 16 MiB and generates the same tokens as Node', async (t) => {
  const prompt = 'The quick brown fox';
  const node = await loadModel(pkg270, { threads: 2 });
  const want = await node.complete(prompt, { maxTokens: 16, temperature: 0 });
  node.dispose();
  const { page, errors } = await newPage(chromium);
  const run = await runExample(page, isolated.url, { model: 'models/gemma-3-270m-int4/', prompt, max_tokens: '16' });
  assert.deepEqual(errors, []);
  const m = run.info.memory;
  const shard = statSync(join(pkg270, 'model-00001-of-00001.safetensors')).size;
  assert.ok(m.largestChunkBytes <= 16 << 20, `largest buffer ${m.largestChunkBytes} bytes`);
  assert.ok(m.peakFileBytes >= shard, 'every file was held in memory once (in chunks)');
  assert.equal(m.fileBytes, 0, 'the files are let go once the weights are in wasm memory');
  assert.deepEqual(run.result.tokenIds, want.tokenIds);
  const rss = rendererPeakBytes();
  t.diagnostic(
    `270m int4:32 in Chromium: shard ${(shard / 2 ** 20).toFixed(1)} MiB; peak model files held ${(m.peakFileBytes / 2 ** 20).toFixed(1)} MiB ` +
      `(largest buffer ${(m.largestChunkBytes / 2 ** 20).toFixed(1)} MiB); wasm memory in use ${(m.wasmBytes / 2 ** 20).toFixed(1)} MiB; ` +
      `peak ≈ files + wasm = ${((m.peakFileBytes + m.wasmBytes) / 2 ** 20).toFixed(1)} MiB; measured peak resident memory of the page's renderer process (JS heaps + wasm, VmHWM) ${(rss / 2 ** 20).toFixed(1)} MiB`,
  );
  await page.context().close();
});

test('the chat page: a message streams, stop ends it mid-answer, a second message is answered and shown on screen', async () => {
  const { page, errors } = await newPage(chromium);
  await page.goto(`${isolated.url}/?model=models/gemma-3-270m-int4/&max_tokens=48`);
  await page.waitForFunction(() => !(document.getElementById('input') as HTMLInputElement).disabled, undefined, { timeout: 120_000 });
  assert.match(await page.textContent('#status') ?? '', /gemma3_text.*2 threads/);

  // Count the distinct texts the answer shows while it streams.
  await page.evaluate(() => {
    const w = window as unknown as { seen: Set<string> };
    w.seen = new Set();
    new MutationObserver(() => {
      const a = document.querySelectorAll('.assistant');
      w.seen.add(a[a.length - 1]?.textContent ?? '');
    }).observe(document.getElementById('log')!, { subtree: true, childList: true, characterData: true });
  });
  await page.fill('#input', 'Tell me a story about the sea.');
  await page.click('#send');
  await page.waitForFunction(() => (document.querySelector('.assistant')?.textContent ?? '').length > 0, undefined, { polling: 'raf' });
  await page.click('#stop');
  await page.waitForFunction(() => !(document.getElementById('input') as HTMLInputElement).disabled);
  assert.match(await page.textContent('#stats') ?? '', /stopped/, 'the answer ended by the stop button');
  const stoppedTokens = Number(/^(\d+) tokens/.exec((await page.textContent('#stats')) ?? '')?.[1]);
  assert.ok(stoppedTokens < 48, `stopped after ${stoppedTokens} of at most 48 tokens`);
  const first = (await page.textContent('.assistant')) ?? '';

  await page.fill('#input', 'And then?');
  await page.click('#send');
  await page.waitForFunction(() => document.querySelectorAll('.assistant').length === 2 && !(document.getElementById('input') as HTMLInputElement).disabled, undefined, { timeout: 120_000 });
  const seen = await page.evaluate(() => [...(window as unknown as { seen: Set<string> }).seen].length);
  assert.ok(seen >= 4, `the answers were shown as they streamed (${seen} distinct texts)`);
  assert.deepEqual(errors, []);

  // The second answer is the Node library's answer to the same conversation, run the same way:
  // the first turn stopped by an AbortSignal once as many tokens as the page showed had arrived
  // (an abort finds the last shown token already fed to the cache, where a token limit leaves it
  // out), the second turn continuing from that cached prefix. Run another way, the same token can
  // enter the cache through a decode step in one run and a prefill batch in the other, and a
  // near tie of this random-weight model can flip on the last bits.
  const node = await loadModel(pkg270, { threads: 2 });
  const turn1 = [{ role: 'user' as const, content: 'Tell me a story about the sea.' }];
  const stop = new AbortController();
  let cut = '';
  let shown = 0;
  for await (const c of node.streamChat(turn1, { maxTokens: 48, signal: stop.signal })) {
    cut += c.text;
    shown += c.tokenIds.length;
    if (shown === stoppedTokens) stop.abort();
  }
  assert.equal(cut, first, 'the stopped answer is the first tokens of the full one');
  const want = await node.chat([...turn1, { role: 'assistant', content: first }, { role: 'user', content: 'And then?' }], { maxTokens: 48 });
  node.dispose();
  const answer = page.locator('.assistant').nth(1);
  assert.equal(await answer.textContent(), want.text);
  // On screen: the answer's pixels are those of the expected text rendered the same way, and not
  // those of another text.
  const shot = await answer.screenshot();
  const render = async (id: string, text: string) => {
    await page.evaluate(([id, text]) => {
      const d = document.createElement('div');
      d.className = 'msg assistant';
      d.id = id;
      d.textContent = text;
      document.getElementById('log')!.append(d);
    }, [id, text] as const);
    return page.locator(`#${id}`).screenshot();
  };
  const same = await pixelsDiffering(page, shot, await render('expected', want.text));
  const other = await pixelsDiffering(page, shot, await render('other', first.slice(0, Math.max(1, first.length - 1)) + want.text.slice(1)));
  assert.ok(same && same.differing === 0, `the screenshot shows the expected answer (${JSON.stringify(same)})`);
  assert.ok(other === null || other.differing > 0, 'a different text gives different pixels');
  await page.context().close();
});

test('damaged packages: the page shows a clear one-line error naming the file', async () => {
  const cases = [
    { model: 'cut-shard', want: /models\/cut-shard\/model-00001-of-00001\.safetensors.*(truncated|does not fit|bytes)/ },
    { model: 'bad-meta', want: /models\/bad-meta\/meta\.yaml: not readable YAML/ },
    { model: 'no-such-model', want: /models\/no-such-model\/config\.json: not found/ },
  ];
  for (const c of cases) {
    const { page } = await newPage(chromium);
    await page.goto(`${isolated.url}/?model=models/${c.model}/`);
    await page.waitForSelector('#status.error', { timeout: 60_000 });
    const text = (await page.textContent('#status')) ?? '';
    assert.match(text, c.want, `${c.model}: ${text}`);
    assert.doesNotMatch(text, /\n|\bat \w+ \(/, 'one line, no stack trace');
    await page.context().close();
  }
});

test('a reload reads the model from Cache Storage instead of the network', async () => {
  const { page } = await newPage(chromium);
  const first = await runExample(page, isolated.url, { model: 'models/demo-int8/', max_tokens: '4' });
  const progress1 = await page.evaluate(() => (window as unknown as { lutraProgress: { fromCache: boolean; file: string }[] }).lutraProgress);
  await page.reload();
  const second = await page.evaluate(() => (window as unknown as { lutraExample: Promise<ExampleRun> }).lutraExample);
  const progress2 = await page.evaluate(() => (window as unknown as { lutraProgress: { fromCache: boolean; file: string }[] }).lutraProgress);
  assert.ok(progress1.some((p) => p.file.endsWith('.safetensors') && !p.fromCache), 'the first load fetched the shard');
  assert.ok(progress2.filter((p) => p.file.endsWith('.safetensors')).every((p) => p.fromCache), 'the reload read it from the cache');
  assert.deepEqual(second.result.tokenIds, first.result.tokenIds);
  // A file that changed on the server (a newer Last-Modified) is fetched again.
  const shard = join(demo8, 'model-00001-of-00001.safetensors');
  utimesSync(shard, new Date(), new Date(Date.now() + 5000));
  await page.reload();
  await page.evaluate(() => (window as unknown as { lutraExample: Promise<ExampleRun> }).lutraExample);
  const progress3 = await page.evaluate(() => (window as unknown as { lutraProgress: { fromCache: boolean; file: string }[] }).lutraProgress);
  assert.ok(progress3.some((p) => p.file.endsWith('.safetensors') && !p.fromCache), 'the changed shard was fetched again');
  await page.context().close();
});

test('a Q8_0 GGUF by URL, a picked folder and a directory handle load in the page and generate what Node generates', async () => {
  const prompt = 'And the LORD said';
  const node = await loadModel(demo8, { threads: 2 });
  const want = await node.complete(prompt, { maxTokens: 24, temperature: 0 });
  const chatWant = await node.chat([{ role: 'user', content: 'Tell me a fortune.' }], { maxTokens: 32 });
  node.dispose();

  // The GGUF export of the same int8:32 package (Q8_0 block for block): same tokens.
  const { page, errors } = await newPage(chromium);
  const run = await runExample(page, isolated.url, { model: 'models/demo-q8_0.gguf', prompt, max_tokens: '24' });
  assert.deepEqual(run.result.tokenIds, want.tokenIds, 'GGUF in the page = package in Node');

  // A directory handle: the package's files written to the Origin Private File System first.
  const names = readdirSync(demo8);
  const fromHandle = await page.evaluate(
    async ({ names, prompt }) => {
      const root = await navigator.storage.getDirectory();
      const dir = await root.getDirectoryHandle('demo-int8', { create: true });
      for (const n of names) {
        const w = await (await dir.getFileHandle(n, { create: true })).createWritable();
        await w.write(await (await fetch(`/models/demo-int8/${n}`)).blob());
        await w.close();
      }
      const client = '/lutra.js'; // the page's module, not one TypeScript can see
      const { LutraEngine } = await import(client);
      const e = LutraEngine.create();
      const info = await e.load(dir);
      const r = await e.complete(prompt, { maxTokens: 24, temperature: 0 });
      e.terminate();
      return { ids: r.tokenIds as number[], arch: info.architecture as string };
    },
    { names, prompt },
  );
  assert.equal(fromHandle.arch, 'gemma3_text');
  assert.deepEqual(fromHandle.ids, want.tokenIds, 'directory handle = Node');
  assert.deepEqual(errors, []);
  await page.context().close();

  // The chat page's folder picker (<input type=file webkitdirectory>).
  const chat = await newPage(chromium);
  await chat.page.goto(`${isolated.url}/?model=models/demo/&max_tokens=32`);
  await chat.page.waitForFunction(() => !(document.getElementById('input') as HTMLInputElement).disabled, undefined, { timeout: 60_000 });
  await chat.page.setInputFiles('#files', demo8);
  await chat.page.waitForFunction(() => /demo-int8/.test(document.getElementById('status')!.textContent ?? '') && !(document.getElementById('input') as HTMLInputElement).disabled, undefined, { timeout: 60_000 });
  await chat.page.fill('#input', 'Tell me a fortune.');
  await chat.page.click('#send');
  await chat.page.waitForFunction(() => document.querySelector('.assistant') && !(document.getElementById('input') as HTMLInputElement).disabled);
  assert.equal(await chat.page.textContent('.assistant'), chatWant.text, 'the picked folder answers as the package does in Node');
  assert.deepEqual(chat.errors, []);
  await chat.page.context().close();
});
