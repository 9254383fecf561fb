// Messages between a page (client.ts) and the engine's dedicated worker (engine-worker.ts).
import type { ChatMessage, ModelInfo } from '../api/model.js';
import type { GenerateOptions, GenerationChunk, GenerationResult } from '../runtime/generate.js';
import type { LoadProgress, PickedFile } from './sources.js';

export interface BrowserLoadOptions {
  /** Threads (default: the cores when the page is cross-origin isolated, else 1). */
  threads?: number;
  /** Keep fetched files in Cache Storage (default true). */
  cache?: boolean;
  /** Tokens per session (default min(max_position_embeddings, 4096)). */
  contextLength?: number;
  /** Scan every weight for NaN/Inf at load (default true). */
  checkWeights?: boolean;
  /** wasm kernels build: 'auto' (default), 'relaxed' or 'baseline'. */
  simd?: 'auto' | 'relaxed' | 'baseline';
  /** LUT weights repacked for speed (default true; false keeps them at their file's bits: LoadOptions.repack). */
  repack?: boolean;
  /** Polls a waiting pool thread makes before it sleeps (the page's LUTRA_SPIN; default 2000). */
  spin?: number;
}

/** What generate requests may carry across the message boundary (no signal, no draft model). */
export type BrowserGenerateOptions = Omit<GenerateOptions, 'signal' | 'speculative'> & { speculative?: 'lookup' | 'suffix' };

export interface EngineMemory {
  /** Bytes of the engine's WebAssembly memory in use (weights, KV caches, activations). */
  wasmBytes: number;
  /** Bytes of model files held in the worker's memory right now (freed after loading). */
  fileBytes: number;
  /** Most file bytes held at once during the last load. */
  peakFileBytes: number;
  /** The largest buffer model files were held in on their way to the engine (chunks of at most 16 MiB). */
  largestChunkBytes: number;
  /** The worker's JS heap (Chromium only; 0 where the browser does not say). */
  jsHeapBytes: number;
}

export interface LoadedInfo extends ModelInfo {
  /** Whether the page is cross-origin isolated (threads need it). */
  crossOriginIsolated: boolean;
  /** Set when the engine runs on fewer threads than asked, and why. */
  notice?: string;
  source: string;
  memory: EngineMemory;
}

export type Request =
  | { type: 'load'; id: number; url?: string; files?: PickedFile[]; options: BrowserLoadOptions }
  | { type: 'generate'; id: number; prompt?: string | number[]; messages?: ChatMessage[]; options: BrowserGenerateOptions }
  | { type: 'tokenize'; id: number; text: string }
  | { type: 'abort'; id: number }
  | { type: 'memory'; id: number }
  | { type: 'unload'; id: number };

export type Reply =
  | { type: 'progress'; id: number; progress: LoadProgress }
  | { type: 'loaded'; id: number; info: LoadedInfo }
  | { type: 'chunk'; id: number; chunk: GenerationChunk }
  | { type: 'done'; id: number; result: GenerationResult; memory: EngineMemory }
  | { type: 'value'; id: number; value: unknown }
  | { type: 'error'; id: number; message: string; code?: string };
