// Open a model folder: weights, config and tokenizer, on the chosen backend.
import { openWeightSource } from '../io/source.js';
import { Gemma3Model } from '../model/gemma3.js';
import { GemmaTokenizer } from '../tokenizer/tokenizer.js';
import type { Backend } from '../backend/backend.js';
import { ReferenceBackend } from '../backend/reference/index.js';
import { WasmBackend } from '../backend/wasm/index.js';
import { LutraError } from '../util/errors.js';

export interface LoadedModel {
  model: Gemma3Model;
  tokenizer: GemmaTokenizer;
  dir: string;
  loadSeconds: number;
}

export function makeBackend(name: string, opts: { threads?: number } = {}): Backend {
  if (name === 'reference') return new ReferenceBackend();
  if (name === 'wasm') return new WasmBackend({ threads: opts.threads });
  throw new LutraError(`--backend ${name}: unknown; available: wasm, reference`);
}

export function loadModel(dir: string, backend: Backend, opts: { tokenizer?: boolean } = {}): { model: Gemma3Model; tokenizer: GemmaTokenizer | null; loadSeconds: number } {
  const t0 = performance.now();
  const src = openWeightSource(dir);
  try {
    const model = new Gemma3Model(src.config, backend, src);
    const tokenizer = opts.tokenizer === false ? null : GemmaTokenizer.load(dir, src.config.eosTokenIds);
    return { model, tokenizer, loadSeconds: (performance.now() - t0) / 1000 };
  } finally {
    src.close();
  }
}
