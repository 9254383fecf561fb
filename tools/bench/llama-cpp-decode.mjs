// Decode timing of a GGUF in llama.cpp (node-llama-cpp, CPU), 6-token prompt then 63 greedy steps,
// with 1 and 2 threads. Usage: node tools/bench/llama-cpp-decode.mjs FILE.gguf (until `lutra bench` exists).
import { getLlama, LlamaLogLevel } from 'node-llama-cpp';
const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: process.argv[2] });
for (const threads of [1, 2]) {
  const ctx = await model.createContext({ contextSize: 512, threads, batchSize: 512 });
  const seq = ctx.getSequence();
  const prompt = Array.from({ length: 6 }, (_, i) => 1000 + i * 37);
  const t0 = performance.now();
  let n = 0; let tPrefill = 0;
  for await (const tok of seq.evaluate(prompt, { temperature: 0 })) {
    if (n === 0) tPrefill = performance.now();
    if (++n >= 64) break;
  }
  const t1 = performance.now();
  console.log(`llama.cpp threads ${threads}: first token after ${(tPrefill - t0).toFixed(0)} ms; decode ${((n - 1) / ((t1 - tPrefill) / 1000)).toFixed(2)} tok/s over ${n - 1} steps`);
  await ctx.dispose();
}
