// The architectures lutra runs, chosen by config.json's model_type (or a GGUF file's
// general.architecture). Everything outside src/arch/ reaches a model family through here.
import type { Architecture } from './architecture.js';
import type { ModelConfig } from './config-types.js';
import { gemma3 } from './gemma3/index.js';
import { gemma4 } from './gemma4/index.js';
import { LutraError } from '../util/errors.js';

export const ARCHITECTURES: readonly Architecture[] = [gemma3 as unknown as Architecture, gemma4 as unknown as Architecture];

function supported(): string {
  return ARCHITECTURES.map((a) => a.modelTypes.map((t) => `"${t}"`).join(', ')).join(', ');
}

/** The architecture that reads a config.json with this model_type. */
export function architectureForModelType(raw: Record<string, unknown>, file: string): Architecture {
  const type = raw.model_type;
  const arch = ARCHITECTURES.find((a) => a.modelTypes.includes(type as string));
  if (!arch) throw new LutraError(`${file}: model_type is ${JSON.stringify(type ?? null)}; lutra runs ${supported()}`);
  return arch;
}

/** Resolve a parsed config.json into a complete config of its architecture. */
export function resolveModelConfig(raw: Record<string, unknown>, file = 'config.json'): ModelConfig {
  return architectureForModelType(raw, file).resolveConfig(raw, file);
}

/** The architecture of a resolved config. */
export function architectureOf(cfg: ModelConfig): Architecture {
  const arch = ARCHITECTURES.find((a) => a.modelTypes.includes(cfg.modelType));
  if (!arch) throw new LutraError(`model type "${cfg.modelType}" has no architecture module`);
  return arch;
}

/** The architecture llama.cpp calls `name` (a GGUF file's general.architecture), or null. */
export function architectureForGguf(name: string | undefined): Architecture | null {
  return ARCHITECTURES.find((a) => a.gguf.arch === name) ?? null;
}
