// The Architecture interface: everything lutra knows about one model family sits behind it, in
// its own module under src/arch/ — config resolution, the tensor manifest (name, shape, part,
// GGUF name), the KV-cache layout, the forward pass and the GGUF mapping. Commands and the
// runtime reach a model family only through this interface (see registry.ts).
import type { Backend } from '../backend/backend.js';
import type { GgufFile, GgufMetadataEntry } from '../io/gguf.js';
import type { ModelConfig } from './config-types.js';
import type { CacheLayerSpec, CausalLM, WeightSource } from '../model/forward.js';
import type { Fp16ScaleRule } from '../fp16/scale.js';

/** The parts `--quant PART=FORMAT` addresses. */
export type Part = 'embed' | 'ple' | 'attn' | 'ffn' | 'experts' | 'router' | 'lmhead';
export const PARTS: readonly Part[] = ['embed', 'ple', 'attn', 'ffn', 'experts', 'router', 'lmhead'];
/**
 * The parts `--quant all=FORMAT` sets: all but the router, which stays as stored unless named. Its
 * logits choose the experts, so an error there changes which weights run rather than adding noise
 * to them, and at [experts, hidden] it is a tiny share of the bytes.
 */
export const ALL_PARTS: readonly Part[] = PARTS.filter((p) => p !== 'router');

/** One tensor a model reads. */
export interface TensorSpec {
  /** Normalised Hugging Face name, e.g. `model.layers.3.self_attn.q_proj.weight`. */
  name: string;
  /** PyTorch order: [out, in] for matrices. */
  shape: number[];
  /** The config fields the shape follows from, for error messages. */
  from: string;
  /** The quantization part, or null for tensors kept as stored (norm gains, scalars). */
  part: Part | null;
  /** llama.cpp's name for it. */
  gguf: string;
  /** The share of it one decoded token reads when that is not all of it (stacked experts: top-k of E). */
  readPerToken?: number;
}

export interface LoadChecks {
  /** Scan every weight for NaN/Inf as it is read (default true). */
  weights?: boolean;
}

/** The GGUF side of an architecture: what llama.cpp calls it and how its files map back. */
export interface GgufMapping<C extends ModelConfig> {
  /** general.architecture. */
  readonly arch: string;
  /** GGUF tensor name → normalised HF name, or null for a tensor lutra does not know. */
  hfName(gguf: string): string | null;
  /** GGUF tensors the reader skips (generated ones such as Gemma 4's rope_freqs). */
  ignored?(gguf: string): boolean;
  /** An HF-style config.json rebuilt from the file's metadata. */
  configFromGguf(f: GgufFile, vocabSize: number, hasOutput: boolean): Record<string, unknown>;
  /** Whether 1-D norm gains are stored as 1 + w in GGUF (and as w in HF checkpoints). */
  readonly normsStoredPlusOne: boolean;
  /** The architecture's metadata keys (tokenizer keys are added by the exporter). */
  metadata(cfg: C, name: string, fileType: number): GgufMetadataEntry[];
  /** Tensors the GGUF file holds beyond the manifest (Gemma 4's rope_freqs). */
  extraTensors?(cfg: C): { gguf: string; data: Float32Array }[];
  /** Why llama.cpp would compute this config differently from the HF semantics (empty when it agrees). */
  differences(cfg: C): string[];
  /** Why llama.cpp cannot run this config at all (the exporter refuses it), or null. */
  exportProblem?(cfg: C): string | null;
}

export interface Architecture<C extends ModelConfig = ModelConfig> {
  /** Short name: `gemma3`, `gemma4`. */
  readonly name: string;
  /** config.json `model_type` values it reads (text model and multimodal wrapper). */
  readonly modelTypes: readonly string[];
  resolveConfig(raw: Record<string, unknown>, file: string): C;
  /** Every tensor the model reads, in load order. `src` says whether optional ones are present. */
  tensors(cfg: C, src: Pick<WeightSource, 'has' | 'separateLmHead'>): TensorSpec[];
  cacheLayout(cfg: C): CacheLayerSpec[];
  /** How a tensor changes when the residual stream is scaled by α (convert --fp16-scale), or null when it does not. */
  fp16ScaleRule(name: string): Fp16ScaleRule | null;
  /** Build the model on `backend`, reading every tensor from `src` (checked against the manifest first). */
  load(cfg: C, backend: Backend, src: WeightSource, checks?: LoadChecks): CausalLM;
  readonly gguf: GgufMapping<C>;
}
