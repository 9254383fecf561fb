// Open whatever a --model or convert source names: a Hugging Face checkpoint folder, a lutra
// package folder, or a GGUF file (gemma3 or gemma4).
import { existsSync, statSync } from 'node:fs';
import type { WeightSource } from '../model/forward.js';
import { Checkpoint } from './checkpoint.js';
import { isPackage, PackageSource } from './package.js';
import { GgufSource, isGgufPath } from './gguf-source.js';
import { LutraError } from '../util/errors.js';

export type OpenedSource = WeightSource & { kind: 'checkpoint' | 'package' | 'gguf'; weightFiles(): string[] };

export function openWeightSource(path: string): OpenedSource {
  if (!existsSync(path)) {
    if (isGgufPath(path)) throw new LutraError(`${path}: GGUF file not found`);
    throw new LutraError(`${path}: model directory not found; expected a model folder (Hugging Face checkpoint or lutra package) or a .gguf file`);
  }
  if (!statSync(path).isDirectory()) {
    if (isGgufPath(path)) return new GgufSource(path);
    throw new LutraError(`${path}: is a file; expected a model folder (Hugging Face checkpoint or lutra package) or a .gguf file`);
  }
  if (isPackage(path)) return Object.assign(new PackageSource(path), { kind: 'package' as const });
  return Object.assign(Checkpoint.open(path), { kind: 'checkpoint' as const });
}
