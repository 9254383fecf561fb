// lutra attention: the maps are the model's own attention (they rebuild its attention output), the
// sliding window holds on local layers and global layers see the whole prefix; the CLI's page draws
// that in a browser.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { spawnSync } from 'node:child_process';
import { loadModel as loadEngine } from '../src/runtime/load.js';
import { WasmBackend } from '../src/backend/wasm/index.js';
import { Session } from '../src/runtime/session.js';
import { attentionMaps } from '../src/analysis/attention.js';
import { CLI } from './server-helpers.js';
import { launchChromium, newPage } from './browser-helpers.js';

const DEMO = 'models/demo';
const root = mkdtempSync(join(tmpdir(), 'lutra-attn-'));
after(() => rmSync(root, { recursive: true, force: true }));
// Longer than the demo model's sliding window of 128 tokens.
const TEXT = readFileSync(join(DEMO, 'heldout-sample.txt'), 'utf8').slice(0, 900);

test('attention maps rebuild the attention output; no weight outside the window on sliding layers, the whole prefix on global ones', () => {
  const backend = new WasmBackend({ threads: 2 });
  try {
    const { model, tokenizer } = loadEngine(DEMO, backend);
    const ids = tokenizer!.encode(TEXT, { bos: true });
    const T = ids.length;
    assert.ok(T > 160, `prompt of ${T} tokens`);
    const r = attentionMaps(model, ids);
    // The model's own v and attention output, from an ordinary prefill.
    const v = new Map<number, Float32Array>();
    const att = new Map<number, Float32Array>();
    const s = new Session(model, { contextLength: T, prefillBatch: T });
    s.prefill(ids, { observer: (l, p, d) => (p === 'v_proj' ? v.set(l, d.slice()) : p === 'attn' ? att.set(l, d.slice()) : undefined) });
    s.dispose();
    const nH = model.cfg.numHeads;
    let sliding = 0;
    let global = 0;
    for (const L of r.layers) {
      const D = att.get(L.layer)!.length / (T * nH);
      const nKV = v.get(L.layer)!.length / (T * D);
      let worst = 0;
      for (const [h, map] of L.maps.entries()) {
        const kvh = L.heads[h].kvHead;
        for (let t = 0; t < T; t++) {
          let sum = 0;
          for (let j = 0; j < T; j++) {
            const p = map[t * T + j];
            sum += p;
            if (j > t) assert.equal(p, 0, 'causal');
            if (L.sliding && t - j >= L.window) assert.equal(p, 0, `layer ${L.layer} head ${h}: weight at q ${t}, k ${j}, outside the window ${L.window}`);
          }
          assert.ok(Math.abs(sum - 1) < 1e-5, 'rows sum to 1');
          for (let d = 0; d < D; d++) {
            let o = 0;
            for (let j = 0; j < T; j++) o += map[t * T + j] * v.get(L.layer)![(j * nKV + kvh) * D + d];
            worst = Math.max(worst, Math.abs(o - att.get(L.layer)![(t * nH + h) * D + d]));
          }
        }
      }
      assert.ok(worst <= 1e-4, `layer ${L.layer}: maps·V vs the model's attention output ${worst}`);
      if (L.sliding) sliding++;
      else {
        global++;
        // A global layer's late queries put weight beyond the window (on <bos> at least).
        const far = L.maps.some((m) => m[(T - 1) * T] > 0);
        assert.ok(far, `global layer ${L.layer} sees the whole prefix`);
      }
    }
    assert.ok(sliding > 0 && global > 0);
  } finally {
    backend.dispose();
  }
});

test('lutra attention writes the page and the figures; the page draws the band on sliding layers', async () => {
  const out = join(root, 'a.html');
  const r = spawnSync(process.execPath, [CLI, 'attention', '--prompt', TEXT, '--out', out, '--json', '--threads', '2'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.layers.length, 8);
  assert.deepEqual(j.layers.map((l: { sliding: boolean }) => l.sliding), [true, true, true, true, true, false, true, true]);
  assert.ok(existsSync(out));
  const bad = spawnSync(process.execPath, [CLI, 'attention', '--prompt', TEXT, '--out', out, '-n', '10'], { encoding: 'utf8' });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /the prompt is \d+ tokens; --max-tokens allows 10/);
  const b = await launchChromium();
  try {
    const { page, errors } = await newPage(b);
    await page.goto(pathToFileURL(out).href);
    await page.waitForSelector('canvas');
    // Pixels of layer 0 (sliding) and layer 5 (global), head 0: the far-left cell of the last query row.
    const probe = await page.evaluate(() => {
      const canvases = [...document.querySelectorAll('.layer')].map((l) => l.querySelector('canvas') as HTMLCanvasElement);
      const at = (c: HTMLCanvasElement, x: number, y: number) => Array.from(c.getContext('2d')!.getImageData(x, y, 1, 1).data);
      const T = canvases[0].width;
      return { T, count: document.querySelectorAll('canvas').length, slidingFar: at(canvases[0], 0, T - 1), globalFar: at(canvases[5], 0, T - 1), slidingDiag: at(canvases[0], T - 1, T - 1) };
    });
    assert.equal(probe.count, 8 * 4);
    assert.deepEqual(probe.slidingFar, [255, 255, 255, 255], 'nothing outside the window on a sliding layer');
    assert.notDeepEqual(probe.globalFar, [255, 255, 255, 255], 'a global layer attends to <bos> from the last query');
    assert.notDeepEqual(probe.slidingDiag, [255, 255, 255, 255]);
    assert.deepEqual(errors, []);
    await page.screenshot({ path: join(root, 'attention.png') });
  } finally {
    await b.close();
  }
});
