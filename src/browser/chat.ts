// The chat page (index.html): pick a model (the server's list in models.json, a URL or local
// files), then chat with streaming answers, a stop button, tok/s and memory.
import { LutraEngine, type ChatMessage, type LoadedInfo } from './client.js';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const status = $<HTMLDivElement>('status');
const log = $<HTMLDivElement>('log');
const input = $<HTMLInputElement>('input');
const send = $<HTMLButtonElement>('send');
const stop = $<HTMLButtonElement>('stop');
const stats = $<HTMLDivElement>('stats');
const picker = $<HTMLSelectElement>('model');

const engine = LutraEngine.create();
let history: ChatMessage[] = [];
let running: AbortController | null = null;
const params = new URLSearchParams(location.search);
/** Tokens per answer at most (?max_tokens=N; default 256). */
const maxTokens = Number(params.get('max_tokens') ?? 256) || 256;

const mb = (n: number) => `${(n / 2 ** 20).toFixed(0)} MB`;

function say(text: string, error = false): void {
  status.textContent = text;
  status.className = error ? 'error' : '';
}

function ready(on: boolean): void {
  input.disabled = send.disabled = !on;
}

async function load(source: string | FileList): Promise<void> {
  ready(false);
  history = [];
  log.textContent = '';
  say('loading…');
  try {
    const info: LoadedInfo = await engine.load(source, {
      onProgress: (p) => say(`loading ${p.file.split('/').pop()} (${p.done + 1}/${p.files}): ${mb(p.loaded)}${p.total ? ` of ${mb(p.total)}` : ''}${p.fromCache ? ' from cache' : ''}`),
    });
    say(`${info.source}: ${info.architecture}, ${info.numLayers} layers, ${info.threads} thread${info.threads > 1 ? 's' : ''}, loaded in ${info.loadSeconds.toFixed(1)} s, wasm memory ${mb(info.memory.wasmBytes)}${info.notice ? `\n${info.notice}` : ''}`);
    ready(true);
    input.focus();
  } catch (e) {
    say(`error: ${(e as Error).message}`, true);
  }
}

function bubble(role: 'user' | 'assistant', text: string): HTMLDivElement {
  const d = document.createElement('div');
  d.className = `msg ${role}`;
  d.textContent = text;
  log.append(d);
  return d;
}

$<HTMLFormElement>('form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const text = input.value.trim();
  if (!text || running) return;
  input.value = '';
  bubble('user', text);
  history.push({ role: 'user', content: text });
  const out = bubble('assistant', '');
  running = new AbortController();
  ready(false);
  stop.disabled = false;
  let answer = '';
  try {
    const it = engine.stream({ messages: history }, { maxTokens, signal: running.signal });
    for (;;) {
      const r = await it.next();
      if (r.done) {
        const t = r.value.timings;
        const rate = t.decodeSteps > 0 ? (t.decodeSteps / (t.decodeMs / 1000)).toFixed(1) : '–';
        const mem = await engine.memory();
        stats.textContent = `${r.value.usage.completionTokens} tokens, ${rate} tok/s decode, prefill ${t.promptEvaluated} tokens in ${t.prefillMs.toFixed(0)} ms; ${r.value.finishReason === 'abort' ? 'stopped; ' : ''}wasm memory ${mb(mem.wasmBytes)}${mem.jsHeapBytes ? `, JS heap ${mb(mem.jsHeapBytes)}` : ''}`;
        break;
      }
      answer += r.value.text;
      out.textContent = answer;
    }
    history.push({ role: 'assistant', content: answer });
  } catch (err) {
    say(`error: ${(err as Error).message}`, true);
    history.pop();
  } finally {
    running = null;
    stop.disabled = true;
    ready(true);
    input.focus();
  }
});

stop.addEventListener('click', () => running?.abort());
$<HTMLButtonElement>('load').addEventListener('click', () => {
  const url = $<HTMLInputElement>('url').value.trim();
  void load(url || picker.value);
});
picker.addEventListener('change', () => void load(picker.value));
$<HTMLInputElement>('files').addEventListener('change', (e) => {
  const files = (e.target as HTMLInputElement).files;
  if (files && files.length) void load(files);
});

// The models this host offers (lutra serve writes models.json; a static copy may ship one), else the demo model.
(async () => {
  let models: { name: string; url: string }[] = [];
  try {
    const r = await fetch('models.json');
    if (r.ok) models = await r.json();
  } catch {
    /* no list: the default below */
  }
  if (!models.length) models = [{ name: 'demo', url: 'models/demo/' }];
  for (const m of models) picker.append(new Option(m.name, m.url));
  const chosen = params.get('model');
  if (chosen) picker.value = chosen;
  await load(chosen ?? picker.value);
})();
