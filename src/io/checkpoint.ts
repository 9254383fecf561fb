// A Hugging Face checkpoint directory: config.json plus model.safetensors or shards listed in
// model.safetensors.index.json. Tensor names are normalised to the `model.` scheme; vision and
// audio towers are skipped. Tensors are read one at a time, on demand.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { LutraError } from '../util/errors.js';
import { resolveModelConfig } from '../arch/registry.js';
import type { ModelConfig } from '../arch/config-types.js';
import type { WeightFormat, WeightTensor } from '../model/weight.js';
import { SafetensorsFile, type SafetensorsEntry } from './safetensors.js';
import { openRowReader, type RowReader } from './row-reader.js';

const SKIPPED = /^(model\.)?(vision_tower|multi_modal_projector|audio_tower|embed_vision|embed_audio)\./;

/** Map both published naming generations onto `model.<X>` / `lm_head.weight`; null for non-text tensors. */
export function normaliseTensorName(name: string): string | null {
  let n = name;
  if (n.startsWith('language_model.model.')) n = 'model.' + n.slice('language_model.model.'.length);
  else if (n.startsWith('model.language_model.')) n = 'model.' + n.slice('model.language_model.'.length);
  else if (n === 'language_model.lm_head.weight') n = 'lm_head.weight';
  if (SKIPPED.test(n)) return null;
  return n;
}

export function readJsonFile(path: string, what: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new LutraError(`${path}: cannot read ${what} (${(e as NodeJS.ErrnoException).code ?? e})`);
  }
  try {
    const v = JSON.parse(text);
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not an object');
    return v;
  } catch (e) {
    throw new LutraError(`${path}: ${what} is not a JSON object (${(e as Error).message})`);
  }
}

export class Checkpoint {
  private files: SafetensorsFile[] = [];
  private index = new Map<string, { file: SafetensorsFile; entry: SafetensorsEntry }>();
  readonly config: ModelConfig;
  readonly rawConfig: Record<string, unknown>;

  private constructor(readonly dir: string) {
    if (!existsSync(dir) || !statSync(dir).isDirectory()) {
      throw new LutraError(`${dir}: model directory not found; expected a Hugging Face checkpoint folder with config.json and *.safetensors`);
    }
    const configPath = join(dir, 'config.json');
    if (!existsSync(configPath)) throw new LutraError(`${configPath}: missing; a checkpoint folder needs config.json`);
    this.rawConfig = readJsonFile(configPath, 'the model config');
    this.config = resolveModelConfig(this.rawConfig, configPath);
    for (const f of this.shardFiles()) {
      const st = SafetensorsFile.open(f);
      this.files.push(st);
      const marker = st.metadata.lutra_package !== undefined ? 'lutra_package metadata' : [...st.entries.keys()].find((n) => n.endsWith('.codes'));
      if (marker !== undefined) {
        this.close();
        throw new LutraError(
          `${join(dir, 'meta.yaml')}: missing, but ${f} looks like a lutra package shard (${marker === 'lutra_package metadata' ? marker : `tensor "${marker}"`}); a package needs its meta.yaml (convert it again)`,
        );
      }
      for (const entry of st.entries.values()) {
        const n = normaliseTensorName(entry.name);
        if (n !== null) this.index.set(n, { file: st, entry });
      }
    }
  }

  static open(dir: string): Checkpoint {
    return new Checkpoint(dir);
  }

  private shardFiles(): string[] {
    const single = join(this.dir, 'model.safetensors');
    const indexPath = join(this.dir, 'model.safetensors.index.json');
    if (existsSync(indexPath)) {
      const idx = readJsonFile(indexPath, 'the shard index');
      const map = idx.weight_map as Record<string, string> | undefined;
      if (!map || typeof map !== 'object') throw new LutraError(`${indexPath}: no "weight_map" object`);
      const shards = [...new Set(Object.values(map))].sort();
      for (const s of shards) {
        if (!existsSync(join(this.dir, s))) throw new LutraError(`${join(this.dir, s)}: shard listed in model.safetensors.index.json is missing`);
      }
      return shards.map((s) => join(this.dir, s));
    }
    if (existsSync(single)) return [single];
    throw new LutraError(`${this.dir}: no model.safetensors and no model.safetensors.index.json`);
  }

  has(name: string): boolean {
    return this.index.has(name);
  }

  names(): string[] {
    return [...this.index.keys()];
  }

  /** The shard holding a tensor; the only shard, or the folder, for a missing one. */
  where(name: string): string {
    return this.index.get(name)?.file.path ?? (this.files.length === 1 ? this.files[0].path : this.dir);
  }

  shape(name: string): number[] {
    const hit = this.index.get(name);
    if (!hit) throw new LutraError(`${this.dir}: tensor "${name}" is missing`);
    return hit.entry.shape;
  }

  format(name: string): WeightFormat {
    const hit = this.index.get(name);
    if (!hit) throw new LutraError(`${this.dir}: tensor "${name}" is missing`);
    const d = hit.entry.dtype;
    if (d === 'i8' || d === 'u8') throw new LutraError(`${hit.file.path}: tensor "${hit.entry.name}" is ${d.toUpperCase()}; a checkpoint weight must be F32, F16 or BF16`);
    return { kind: d };
  }

  /** Read a tensor, checking its shape when `expected` is given. */
  load(name: string, expected?: number[]): WeightTensor {
    const hit = this.index.get(name);
    if (!hit) throw new LutraError(`${this.dir}: tensor "${name}" is missing from the checkpoint`);
    const { file, entry } = hit;
    if (expected && (expected.length !== entry.shape.length || expected.some((d, i) => d !== entry.shape[i]))) {
      throw new LutraError(`${file.path}: tensor "${entry.name}" has shape [${entry.shape}], expected [${expected}] from config.json`);
    }
    return { name, shape: entry.shape, format: this.format(name), data: file.read(entry.name), source: file.path };
  }

  /** Rows of a 2-D tensor read from its shard on demand (its own descriptor: outlives close()). */
  rowReader(name: string): RowReader {
    const hit = this.index.get(name);
    if (!hit) throw new LutraError(`${this.where(name)}: tensor "${name}" is missing; cannot read its rows`);
    const { file, entry } = hit;
    if (entry.shape.length !== 2) throw new LutraError(`${file.path}: tensor "${entry.name}" has shape [${entry.shape}]; reading rows needs a 2-D matrix`);
    const [rows, cols] = entry.shape;
    return openRowReader({ name, rows, cols, format: this.format(name), layout: { kind: 'lutra', data: { path: file.path, offset: entry.offset, nbytes: entry.nbytes } } });
  }

  weightFiles(): string[] {
    return this.files.map((f) => f.path);
  }

  close(): void {
    for (const f of this.files) f.close();
    this.files = [];
  }
}
