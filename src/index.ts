// lutra's public API: `import { loadModel } from 'lutra'`.
export { loadModel, LutraModel, ChatSession } from './api/model.js';
export type { LoadOptions, ModelInfo, CompletionOptions, ChatOptions, AdapterOption, LoraInput, ChatSessionOptions, LogProbsOptions, LogProbsResult, TokenLogProb, ChatMessage } from './api/model.js';
export type { GenerateOptions, GenerationChunk, GenerationResult, GenerationUsage, GenerationTimings, FinishReason, StoppedBy } from './runtime/generate.js';
export type { SpeculativeOption, SpeculativeConfig, SpeculativeStats, DraftSource, DraftModel } from './runtime/speculative.js';
export type { DraftProposal } from './runtime/drafts.js';
export type { TokenDistribution } from './runtime/sampler.js';
export { SessionPool } from './api/pool.js';
export type { SessionPoolOptions, Lease } from './api/pool.js';
export { LutraError } from './util/errors.js';
export type { LutraErrorCode } from './util/errors.js';
export { createServer } from './server/server.js';
export type { ServerOptions, LutraServer } from './server/server.js';
/** The demo model that ships with lutra (a folder path). */
export { DEFAULT_MODEL as DEMO_MODEL } from './cli/common.js';
/** The LoRA adapter that ships with lutra for the demo model (fortunes-only fine-tune; a PEFT folder path). */
export { DEMO_LORA } from './cli/common.js';
