// A GGUF file (gemma3 or gemma4 architecture) read as a WeightSource, so `lutra convert` (and
// anything else that opens sources) accepts it like a checkpoint. The architecture module rebuilds
// an HF-style config.json from the metadata and maps names back to HF's; Gemma 3 norms go back
// from GGUF's 1 + w to HF's w.
// Q8_0 and Q4_0 tensors come back as int8:32 and int4:32 codes and scales, never dequantized, so
// package → GGUF → package is bit-exact (docs/FORMAT.md).
import { basename } from 'node:path';
import { LutraError } from '../util/errors.js';
import { architectureForGguf, ARCHITECTURES } from '../arch/registry.js';
import type { Architecture } from '../arch/architecture.js';
import type { ModelConfig } from '../arch/config-types.js';
import type { WeightSource } from '../model/forward.js';
import { matrixShape, type WeightFormat, type WeightTensor } from '../model/weight.js';
import { formatOfGgml, isPlain } from '../model/formats.js';
import { decodeTensor, ggufNumber, ggufString, ggufTypeName, GgufType, readGguf, readTensorBytes, type GgufFile, type GgufTensorInfo } from './gguf.js';
import { q4_0ToInt4, q8_0ToInt8 } from './gguf-blocks.js';
import { openRowReader, type RowLayout, type RowReader } from './row-reader.js';

/** Types decodeTensor can read (dequantized when no lutra format holds them as they are). */
const DECODABLE = new Set<number>([GgufType.F32, GgufType.F16, GgufType.BF16, GgufType.Q8_0, GgufType.Q4_0]);

export function isGgufPath(path: string): boolean {
  return path.toLowerCase().endsWith('.gguf');
}

export class GgufSource implements WeightSource {
  readonly kind = 'gguf' as const;
  readonly file: GgufFile;
  readonly config: ModelConfig;
  readonly rawConfig: Record<string, unknown>;
  /** llama.cpp scales embeddings by sqrt(hidden) in f32, whatever the storage type. */
  readonly embedScale: number;
  /** output.weight, when present, is the head to use. */
  readonly separateLmHead = true;
  readonly arch: Architecture;
  private byHf = new Map<string, GgufTensorInfo>();

  constructor(readonly dir: string) {
    this.file = readGguf(dir);
    // The architecture first: another model's tensors would otherwise be reported one by one.
    const arch = ggufString(this.file, 'general.architecture');
    const a = architectureForGguf(arch);
    if (!a) {
      const known = ARCHITECTURES.map((x) => x.gguf.arch).join(' and ');
      throw new LutraError(`${dir}: general.architecture is ${JSON.stringify(arch ?? null)}; lutra reads ${known} GGUF files`);
    }
    this.arch = a;
    for (const t of this.file.tensors) {
      if (a.gguf.ignored?.(t.name)) continue;
      const hf = a.gguf.hfName(t.name);
      if (hf === null) throw new LutraError(`${dir}: tensor "${t.name}" is not a ${a.name} text tensor lutra knows`);
      this.checkType(t, hf);
      this.byHf.set(hf, t);
    }
    const embed = this.byHf.get('model.embed_tokens.weight');
    if (!embed) throw new LutraError(`${dir}: no token_embd.weight tensor`);
    this.rawConfig = a.gguf.configFromGguf(this.file, embed.shape[0], this.byHf.has('lm_head.weight'));
    this.config = a.resolveConfig(this.rawConfig, `${dir} (${a.gguf.arch}.* metadata)`);
    this.embedScale = Math.fround(Math.sqrt(this.config.hiddenSize));
  }

  has(name: string): boolean {
    return this.byHf.has(name);
  }

  names(): string[] {
    return [...this.byHf.keys()];
  }

  private info(name: string): GgufTensorInfo {
    const t = this.byHf.get(name);
    if (!t) throw new LutraError(`${this.dir}: tensor "${name}" is missing from the GGUF file`);
    return t;
  }

  shape(name: string): number[] {
    return this.info(name).shape;
  }

  /** The GGUF name of an HF tensor name. */
  ggufName(name: string): string {
    return this.info(name).name;
  }

  /** The format load() returns: 1-D tensors are f32 (the −1 is applied in f32), matrices keep theirs. */
  format(name: string): WeightFormat {
    const t = this.info(name);
    this.checkType(t, name);
    if (t.shape.length === 1) return { kind: 'f32' };
    return formatOfGgml(ggufTypeName(t.type)) ?? { kind: 'f32' };
  }

  private checkType(t: GgufTensorInfo, name: string): void {
    if (!DECODABLE.has(t.type)) {
      throw new LutraError(
        `${this.dir}: tensor "${t.name}" (${name}) has type ${ggufTypeName(t.type)}, which lutra cannot read; ` +
          'use a GGUF with F32, F16, BF16, Q8_0 or Q4_0 weights, or the Hugging Face checkpoint',
      );
    }
  }

  load(name: string, expected?: number[]): WeightTensor {
    const t = this.info(name);
    if (expected && (expected.length !== t.shape.length || expected.some((d, i) => d !== t.shape[i]))) {
      throw new LutraError(`${this.dir}: tensor "${t.name}" has shape [${t.shape}], expected [${expected}] from the metadata`);
    }
    const format = this.format(name);
    const base = { name, shape: t.shape, format, source: `${this.dir} (${t.name})` };
    if (t.shape.length === 1) {
      // GGUF stores Gemma norms as 1 + w; HF's w is recovered in f32 (exact for 1 + w in [0.5, 2]).
      const v = decodeTensor(this.file, t);
      if (this.arch.gguf.normsStoredPlusOne && name.endsWith('norm.weight')) for (let i = 0; i < v.length; i++) v[i] = Math.fround(v[i] - 1);
      return { ...base, data: new Uint8Array(v.buffer) };
    }
    const [rows, cols] = matrixShape(t.shape);
    const what = `${this.dir}: tensor "${t.name}"`;
    if (t.type === GgufType.Q8_0) {
      const q = q8_0ToInt8(readTensorBytes(this.file, t), rows, cols, what);
      return { ...base, data: q.codes, scales: q.scales };
    }
    if (t.type === GgufType.Q4_0) {
      const q = q4_0ToInt4(readTensorBytes(this.file, t), rows, cols, what);
      return { ...base, data: q.codes, scales: q.scales };
    }
    if (formatOfGgml(ggufTypeName(t.type))) return { ...base, data: readTensorBytes(this.file, t) };
    return { ...base, data: new Uint8Array(decodeTensor(this.file, t).buffer) };
  }

  /**
   * Rows of a 2-D tensor read from the file on demand (ggml's ne = [cols, rows]: a row is
   * contiguous, cols/32 blocks for Q8_0 / Q4_0). The reader has its own descriptor.
   */
  rowReader(name: string): RowReader {
    const t = this.info(name);
    if (t.shape.length !== 2) throw new LutraError(`${this.dir}: tensor "${t.name}" (${name}) has shape [${t.shape}]; reading rows needs a 2-D matrix`);
    this.checkType(t, name);
    const [rows, cols] = t.shape;
    const data = { path: this.dir, offset: t.offset, nbytes: t.nbytes };
    const format = this.format(name);
    const layout: RowLayout = isPlain(format) ? { kind: 'lutra', data } : { kind: 'ggml', type: ggufTypeName(t.type) as 'Q8_0' | 'Q4_0', data };
    return openRowReader({ name, rows, cols, format, layout });
  }

  weightFiles(): string[] {
    return [this.dir];
  }

  /** general.name, else the file name. */
  modelName(): string {
    return ggufString(this.file, 'general.name') ?? basename(this.dir);
  }

  close(): void {}
}
