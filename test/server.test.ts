// `lutra serve` against the official openai client and plain HTTP: outputs equal the library's,
// usage counts, concurrency, client disconnects, the queue limit, bad requests, the prompt cache.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { statSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import OpenAI from 'openai';
import { loadModel, type LutraModel } from '../src/index.js';
import { DEFAULT_MODEL } from '../src/cli/common.js';
import { startServer, postJson, getJson, waitFor, type ServerProcess } from './server-helpers.js';

let server: ServerProcess;
let client: OpenAI;
let lib: LutraModel;

before(async () => {
  server = await startServer(['--parallel', '4']);
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  lib = await loadModel(DEFAULT_MODEL, { threads: 1 });
});

after(async () => {
  lib?.dispose();
  const code = await server?.stop();
  assert.equal(code, 0, 'the server exits 0 on SIGTERM');
});

const fortune = [{ role: 'user' as const, content: 'Tell me a fortune.' }];

test('openai client: chat completion equals the library, token for token, with right usage', async () => {
  const r = await client.chat.completions.create({ model: 'demo', messages: fortune, max_tokens: 40 });
  const want = await lib.chat(fortune, { maxTokens: 40 });
  assert.equal(r.choices[0].message.content, want.text);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(r.choices[0].finish_reason, want.finishReason === 'length' ? 'length' : 'stop');
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.usage!.prompt_tokens, lib.chatIds(fortune).length);
  assert.equal(r.usage!.completion_tokens, want.usage.completionTokens);
  assert.equal(r.usage!.total_tokens, r.usage!.prompt_tokens + r.usage!.completion_tokens);
});

test('openai client: streamed chat deltas join to the library text; usage chunk last', async () => {
  const stream = await client.chat.completions.create({
    model: 'demo',
    messages: [{ role: 'user', content: 'Who is the shepherd?' }],
    max_tokens: 32,
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let finish: string | null = null;
  let usage: OpenAI.CompletionUsage | undefined;
  let chunks = 0;
  for await (const c of stream) {
    chunks++;
    assert.equal(c.object, 'chat.completion.chunk');
    if (c.choices.length > 0) {
      text += c.choices[0].delta.content ?? '';
      finish = c.choices[0].finish_reason ?? finish;
    }
    if (c.usage) usage = c.usage;
  }
  const want = await lib.chat([{ role: 'user', content: 'Who is the shepherd?' }], { maxTokens: 32 });
  assert.equal(text, want.text);
  assert.ok(chunks > 3, `streamed in ${chunks} chunks`);
  assert.equal(finish, want.finishReason === 'length' ? 'length' : 'stop');
  assert.equal(usage?.completion_tokens, want.usage.completionTokens);
  assert.equal(usage?.prompt_tokens, want.usage.promptTokens);
});

test('openai client: text completions, plain and streamed, equal the library', async () => {
  const prompt = 'And the LORD spake unto Moses, saying,';
  const want = await lib.complete(prompt, { maxTokens: 24 });
  const r = await client.completions.create({ model: 'demo', prompt, max_tokens: 24 });
  assert.equal(r.choices[0].text, want.text);
  assert.equal(r.usage!.prompt_tokens, lib.tokenize(prompt).length);
  assert.equal(r.usage!.completion_tokens, 24);
  assert.equal(r.choices[0].finish_reason, 'length');
  const s = await client.completions.create({ model: 'demo', prompt, max_tokens: 24, stream: true });
  let text = '';
  for await (const c of s) text += c.choices[0]?.text ?? '';
  assert.equal(text, want.text);
  // Sampling with a seed is reproducible through the server, and equals the library's.
  const a = await client.completions.create({ model: 'demo', prompt, max_tokens: 16, temperature: 0.9, top_p: 0.9, seed: 7 });
  const b = await lib.complete(prompt, { maxTokens: 16, temperature: 0.9, topP: 0.9, seed: 7 });
  assert.equal(a.choices[0].text, b.text);
  // Stop strings end the text before them.
  const stopAt = want.text.split(' ').slice(2, 3).join(' ');
  const st = await client.completions.create({ model: 'demo', prompt, max_tokens: 24, stop: [stopAt] });
  assert.equal(st.choices[0].text, want.text.slice(0, want.text.indexOf(stopAt)));
  assert.equal(st.choices[0].finish_reason, 'stop');
});

test('models and health', async () => {
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => m.id), ['demo']);
  const h = await getJson(`${server.url}/health`);
  assert.equal(h.status, 'ok');
  assert.equal(h.active, 0);
});

test('prompt cache: a second turn that extends the first prefills only the new tokens', async () => {
  const turn1 = [{ role: 'user' as const, content: 'Tell me a fortune about the sea.' }];
  const r1 = await postJson(`${server.url}/v1/chat/completions`, { messages: turn1, max_tokens: 30 });
  const answer = r1.json.choices[0].message.content as string;
  const turn2 = [...turn1, { role: 'assistant' as const, content: answer }, { role: 'user' as const, content: 'And one about the land?' }];
  const r2 = await postJson(`${server.url}/v1/chat/completions`, { messages: turn2, max_tokens: 8 });
  assert.equal(r2.status, 200);
  // What the first request left in its session's cache: its prompt and every sampled token but the last.
  const ids1 = lib.chatIds(turn1);
  const first = await lib.chat(turn1, { maxTokens: 30 });
  const held = [...ids1, ...first.tokenIds.slice(0, -1)];
  const ids2 = lib.chatIds(turn2);
  let common = 0;
  while (common < held.length && held[common] === ids2[common]) common++;
  assert.ok(common > ids1.length, `the second prompt starts with the first exchange (${common} of ${ids1.length}+ tokens)`);
  assert.equal(r2.json.usage.prompt_tokens, ids2.length);
  assert.equal(r2.json.usage.prompt_tokens_details.cached_tokens, common);
  assert.equal(r2.json.timings.prompt_n, ids2.length - common, 'prefilled only the tokens after the cached prefix');
});

test('load: 16 concurrent streaming clients × 4 requests with --parallel 4 equal their sequential results', async () => {
  const prompts = readFileSync('bench/prompts.jsonl', 'utf8').trim().split('\n').slice(0, 16).map((l) => JSON.parse(l).prompt as string);
  const want = new Map<string, string>();
  for (const p of prompts) want.set(p, (await lib.chat([{ role: 'user', content: p }], { maxTokens: 24 })).text);
  let maxActive = 0;
  let polling = true;
  const poll = (async () => {
    while (polling) {
      maxActive = Math.max(maxActive, (await getJson(`${server.url}/health`)).active);
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  const clients = Array.from({ length: 16 }, async (_, c) => {
    const got: [string, string][] = [];
    for (let k = 0; k < 4; k++) {
      const p = prompts[(c + 5 * k) % 16];
      const s = await client.chat.completions.create({ model: 'demo', messages: [{ role: 'user', content: p }], max_tokens: 24, stream: true });
      let text = '';
      for await (const ch of s) text += ch.choices[0]?.delta.content ?? '';
      got.push([p, text]);
    }
    return got;
  });
  const results = (await Promise.all(clients)).flat();
  polling = false;
  await poll;
  assert.equal(results.length, 64);
  for (const [p, text] of results) assert.equal(text, want.get(p), `stream for "${p}"`);
  assert.ok(maxActive <= 4, `at most --parallel generations at once (saw ${maxActive})`);
  assert.ok(maxActive >= 2, `requests ran concurrently (saw ${maxActive})`);
  // Their decode steps shared forward passes (batched decode is on by default).
  const decode = (await getJson(`${server.url}/health`)).decode;
  assert.equal(decode.batched, true);
  assert.ok(decode.tokens_per_pass > 1.2 && decode.max_tokens_per_pass >= 2 && decode.max_tokens_per_pass <= 4, `decode passes: ${JSON.stringify(decode)}`);
  const weights = statSync(`${DEFAULT_MODEL}/model.safetensors`).size;
  const limit = weights + 16 * lib.info.kvCacheBytes + 300 * 2 ** 20;
  const peak = server.peakRss();
  assert.ok(peak <= limit, `peak RSS ${(peak / 2 ** 20).toFixed(0)} MiB within ${(limit / 2 ** 20).toFixed(0)} MiB`);
  assert.doesNotMatch(server.stderr(), /internal error/);
});

test('a client that disconnects mid-stream cancels its generation within a token', async () => {
  // Greedy from this prompt runs to the 900-token limit (a few seconds): the disconnect comes first.
  const body = JSON.stringify({ prompt: 'In the beginning', max_tokens: 900, stream: true });
  await new Promise<void>((resolve, reject) => {
    const url = new URL(`${server.url}/v1/completions`);
    const req = request({ host: url.hostname, port: url.port, path: url.pathname, method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      let chunks = 0;
      res.on('data', () => {
        if (++chunks === 3) {
          req.destroy();
          resolve();
        }
      });
      res.on('error', () => {});
    });
    req.on('error', () => {});
    req.end(body);
    setTimeout(() => reject(new Error('no chunks')), 30_000);
  });
  const t0 = Date.now();
  assert.ok(await waitFor(async () => (await getJson(`${server.url}/health`)).active === 0, 1000), 'active generations back to 0 within 1 s');
  assert.ok(Date.now() - t0 <= 1000);
  const r = await client.chat.completions.create({ model: 'demo', messages: fortune, max_tokens: 8 });
  assert.equal(r.choices[0].finish_reason, 'length');
});

test('bad requests get their status and OpenAI-style error JSON', async () => {
  const chat = `${server.url}/v1/chat/completions`;
  const cases: [string, unknown, number, string | null, string | null][] = [
    ['malformed JSON', '{"messages": [', 400, null, 'invalid_json'],
    ['body not an object', '[1, 2]', 400, null, null],
    ['missing messages', { max_tokens: 4 }, 400, 'messages', 'missing_required_parameter'],
    ['messages of the wrong type', { messages: 'hi' }, 400, 'messages', null],
    ['a bad role', { messages: [{ role: 'robot', content: 'x' }] }, 400, 'messages[0].role', null],
    ['temperature of the wrong type', { messages: fortune, temperature: 'hot' }, 400, 'temperature', null],
    ['max_tokens out of range', { messages: fortune, max_tokens: 0 }, 400, 'max_tokens', null],
    ['top_p out of range', { messages: fortune, top_p: 1.5 }, 400, 'top_p', null],
    ['stream of the wrong type', { messages: fortune, stream: 'yes' }, 400, 'stream', null],
    ['n > 1', { messages: fortune, n: 2 }, 400, 'n', null],
    ['tools', { messages: fortune, tools: [{ type: 'function', function: { name: 'f' } }] }, 400, 'tools', null],
    ['unknown model', { model: 'gpt-4o', messages: fortune }, 404, 'model', 'model_not_found'],
    ['prompt longer than the context', { messages: [{ role: 'user', content: 'the sea '.repeat(1200) }] }, 400, 'messages', 'context_length_exceeded'],
  ];
  for (const [what, body, status, param, code] of cases) {
    const r = await postJson(chat, body);
    assert.equal(r.status, status, `${what}: ${JSON.stringify(r.json)}`);
    assert.equal(typeof r.json.error.message, 'string', what);
    assert.equal(r.json.error.type, status === 404 || status === 400 ? 'invalid_request_error' : r.json.error.type, what);
    assert.equal(r.json.error.param, param, `${what}: param`);
    if (code !== null) assert.equal(r.json.error.code, code, `${what}: code`);
    assert.doesNotMatch(r.json.error.message, /\n\s+at /, `${what}: no stack trace`);
  }
  const completions = await postJson(`${server.url}/v1/completions`, { max_tokens: 4 });
  assert.equal(completions.status, 400);
  assert.equal(completions.json.error.param, 'prompt');
  const outside = await postJson(`${server.url}/v1/completions`, { prompt: [2, 99999], max_tokens: 4 });
  assert.equal(outside.status, 400);
  assert.equal(outside.json.error.param, 'prompt');
  // An empty prompt is allowed, as OpenAI allows it: the answer starts from <bos>.
  const empty = await postJson(`${server.url}/v1/completions`, { prompt: '', max_tokens: 2 });
  assert.equal(empty.status, 200, JSON.stringify(empty.json));
  assert.equal(empty.json.usage.prompt_tokens, 1);
  const big = await postJson(chat, { messages: [{ role: 'user', content: 'x'.repeat(2 << 20) }] });
  assert.equal(big.status, 413);
  assert.equal(big.json.error.code, 'request_too_large');
  const route = await fetch(`${server.url}/v2/nothing`);
  assert.equal(route.status, 404);
  assert.equal((await route.json()).error.code, 'not_found');
  const method = await fetch(chat);
  assert.equal(method.status, 405);
  assert.equal(method.headers.get('allow'), 'POST');
  // The server is still fine.
  assert.equal((await getJson(`${server.url}/health`)).status, 'ok');
});

test('the chat page and the model files it loads: served at / with the cross-origin isolation headers, nothing outside the model folder', async () => {
  const page = await fetch(`${server.url}/`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-type') ?? '', /text\/html/);
  assert.equal(page.headers.get('cross-origin-opener-policy'), 'same-origin');
  assert.equal(page.headers.get('cross-origin-embedder-policy'), 'require-corp');
  assert.match(await page.text(), /<title>lutra chat<\/title>/);
  assert.equal((await fetch(`${server.url}/lutra.js`)).headers.get('content-type'), 'text/javascript; charset=utf-8');
  assert.equal((await fetch(`${server.url}/kernels.wasm`)).headers.get('content-type'), 'application/wasm');
  assert.deepEqual(await getJson(`${server.url}/models.json`), [{ name: 'demo', url: 'models/demo/' }]);
  const config = await fetch(`${server.url}/models/demo/config.json`);
  assert.deepEqual(await config.json(), JSON.parse(readFileSync(join(DEFAULT_MODEL, 'config.json'), 'utf8')));
  for (const path of ['/models/demo/..%2F..%2Fpackage.json', '/models/demo/.gitattributes', '/models/other/config.json', '/models/demo/', '/models/demo.gguf']) {
    assert.equal((await fetch(`${server.url}${path}`)).status, 404, path);
  }
  // Without isolation the page still loads (and runs on one thread); with --no-page there is no page.
  const plain = await startServer(['--no-isolation']);
  const noPage = await startServer(['--no-page']);
  try {
    const p = await fetch(`${plain.url}/`);
    assert.equal(p.status, 200);
    assert.equal(p.headers.get('cross-origin-opener-policy'), null);
    const r = await fetch(`${noPage.url}/`);
    assert.equal(r.status, 404);
    assert.equal((await r.json()).error.code, 'not_found');
  } finally {
    await plain.stop();
    await noPage.stop();
  }
});

test('a request queued past the limit gets 429; SIGTERM ends running streams cleanly and exits 0', async () => {
  const s = await startServer(['--parallel', '1', '--queue', '1']);
  try {
    // Greedy from this prompt runs to the 900-token limit (a few seconds).
    const long = { prompt: 'In the beginning', max_tokens: 900, stream: true };
    const first = await fetch(`${s.url}/v1/completions`, { method: 'POST', body: JSON.stringify(long) });
    assert.equal(first.status, 200);
    const reader = first.body!.getReader();
    await reader.read(); // generating now
    const second = fetch(`${s.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ ...long, stream: false, max_tokens: 4 }) });
    assert.ok(await waitFor(async () => (await getJson(`${s.url}/health`)).waiting === 1, 5000), 'the second request waits');
    const third = await postJson(`${s.url}/v1/chat/completions`, { messages: fortune, max_tokens: 4 });
    assert.equal(third.status, 429);
    assert.equal(third.json.error.code, 'rate_limit_exceeded');
    // SIGTERM while the first streams and the second waits: both end cleanly, the server exits 0.
    const exit = s.stop();
    let rest = '';
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      rest += Buffer.from(value).toString();
    }
    assert.match(rest, /data: \[DONE\]\n\n$/, 'the stream ends with [DONE]');
    const r2 = await second;
    assert.ok(r2.status === 200 || r2.status === 503, `the queued request is answered (${r2.status})`);
    assert.equal(await exit, 0);
  } finally {
    await s.stop();
  }
});
