// Open whatever a --model or convert source names: a Hugging Face checkpoint folder or a lutra
// package folder (GGUF files are opened by the converter through src/io/gguf-source.ts).
import { existsSync, statSync } from 'node:fs';
import type { WeightSource } from '../model/gemma3.js';
import { Checkpoint } from './checkpoint.js';
import { isPackage, PackageSource } from './package.js';
import { LutraError } from '../util/errors.js';

export type OpenedSource = WeightSource & { kind: 'checkpoint' | 'package'; weightFiles(): string[] };

export function openWeightSource(path: string): OpenedSource {
  if (!existsSync(path)) throw new LutraError(`${path}: model directory not found; expected a model folder (Hugging Face checkpoint or lutra package)`);
  if (!statSync(path).isDirectory()) throw new LutraError(`${path}: is a file; expected a model folder (Hugging Face checkpoint or lutra package)`);
  if (isPackage(path)) return Object.assign(new PackageSource(path), { kind: 'package' as const });
  return Object.assign(Checkpoint.open(path), { kind: 'checkpoint' as const });
}
