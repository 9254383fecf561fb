// Quantized packages against llama.cpp on the same weights (docs/EXPERIMENTS.md G7, G8): the
// tiny-gemma4 fixture with a per-layer width of 32 (Q8_0/Q4_0 need 32-column blocks), converted to
// int8:32 and int4:32, exported as Q8_0/Q4_0 and F32, 40 teacher-forced positions. Run after npm run build:
//   node tools/experiments/quant-vs-llama.mjs [tiny-gemma4 | tiny]   (tiny: Gemma 3, for the side-by-side)
// Besides lutra's f32 and q8 activations it runs lutra with llama.cpp's CPU roundings emulated
// (test/ggml-numerics.ts), and prints how far lutra's own q8 activations move the fixture (its
// sensitivity to activation rounding, no llama.cpp involved).
import { mkdirSync, mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
const D = new URL('../../dist/src', import.meta.url).pathname;
const { fixtureSpec, fixtureTensors } = await import(`${D}/model/fixture.js`);
const { writeSafetensors } = await import(`${D}/io/safetensors.js`);
const { convert } = await import(`${D}/quant/convert.js`);
const { buildPlan } = await import(`${D}/quant/plan.js`);
const { exportGguf } = await import(`${D}/io/gguf-export.js`);
const { loadModel } = await import(`${D}/runtime/load.js`);
const { ReferenceBackend } = await import(`${D}/backend/reference/index.js`);
const { Session } = await import(`${D}/runtime/session.js`);
const { LlamaCppOracle } = await import(`${D}/verify/llama-cpp.js`);
const { klDivergence, logSoftmax, top2 } = await import(`${D}/verify/metrics.js`);
const { GgmlNumericsBackend } = await import(new URL('../../dist/test/ggml-numerics.js', import.meta.url).pathname);
const root = mkdtempSync(join(tmpdir(), 'lutra-g4q-'));
process.on('exit', () => rmSync(root, { recursive: true, force: true }));
const dir = join(root, 'ck'); mkdirSync(dir);
const shape = process.argv[2] ?? 'tiny-gemma4';
const spec = fixtureSpec(shape);
if (spec.gemma4) spec.config.hidden_size_per_layer_input = 32;
writeFileSync(join(dir, 'config.json'), JSON.stringify(spec.config));
const { gemmaTokenizerFiles } = await import(`${D}/model/fixture.js`);
const { deriveGemma4Tokenizer } = await import(`${D}/tokenizer/gemma4.js`);
const { readFileSync } = await import('node:fs');
const tf = gemmaTokenizerFiles();
const g3 = { tokenizerJson: JSON.parse(readFileSync(tf.tokenizer, 'utf8')), tokenizerConfig: JSON.parse(readFileSync(tf.config, 'utf8')) };
const tok = spec.gemma4 ? deriveGemma4Tokenizer(g3.tokenizerJson, g3.tokenizerConfig) : g3;
writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tok.tokenizerJson));
writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(tok.tokenizerConfig));
await writeSafetensors(join(dir, 'model.safetensors'), fixtureTensors(spec.config, 5, spec.embedStd));
let s = 77 >>> 0; const ids = [2]; while (ids.length < 40) { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; ids.push(5 + (s % 261995)); }
for (const [fmt, type] of [['int8:32', 'q8_0'], ['int4:32', 'q4_0']]) {
  const pkg = join(root, fmt.replace(':', '-'));
  await convert({ src: dir, out: pkg, plan: buildPlan({ quant: [`all=${fmt}`], weightThreshold: 0 }), command: 't' });
  const gguf = pkg + '.gguf';
  await exportGguf({ model: pkg, out: gguf, type });
  const f32 = pkg + '-f32.gguf';
  await exportGguf({ model: pkg, out: f32, type: 'f32' });
  const logits = {};
  for (const act of ['f32', 'q8', 'ggml']) {
    const { model } = loadModel(pkg, act === 'ggml' ? new GgmlNumericsBackend() : new ReferenceBackend({ activations: act }), { tokenizer: false });
    const ours = new Session(model, { contextLength: 64 }).prefill(ids, { all: true }).slice();
    logits[act] = ours;
    const V = model.vocabSize;
    for (const g of act === 'f32' ? [f32, gguf] : [gguf]) {
      const o = await LlamaCppOracle.load(g, { threads: 2, contextSize: 64, kvCacheType: 'f32' });
      const theirs = await o.teacherForced(ids); await o.dispose();
      let sum = 0, max = 0, flips = 0;
      theirs.forEach((row, i) => { const lp = logSoftmax(ours.subarray(i * V, (i + 1) * V)); const kl = klDivergence(row, lp); sum += kl; max = Math.max(max, kl); if (top2(lp).top !== top2(row).top) flips++; });
      const who = act === 'ggml' ? 'lutra with llama.cpp roundings emulated' : `lutra ${act} activations`;
      console.log(`${fmt} package, ${who} vs llama.cpp ${g.endsWith('-f32.gguf') ? 'F32' : type.toUpperCase()}: mean KL ${(sum / ids.length).toExponential(2)}, max ${max.toExponential(2)}, top-1 flips ${flips}/40`);
    }
  }
  const V = logits.f32.length / ids.length;
  let self = 0;
  for (let i = 0; i < ids.length; i++) self += klDivergence(logSoftmax(logits.q8.subarray(i * V, (i + 1) * V)), logSoftmax(logits.f32.subarray(i * V, (i + 1) * V)));
  console.log(`${fmt} package, sensitivity: mean KL(lutra q8 ‖ lutra f32 activations) ${(self / ids.length).toExponential(2)}`);
}
