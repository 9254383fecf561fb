// The generation loop shared by `generate` and `chat`: prefill, then sample and decode one token
// at a time, yielding to the event loop between tokens so Ctrl-C can interrupt.
import type { Session } from './session.js';
import type { Sampler } from './sampler.js';

export interface GenerationStats {
  promptTokens: number;
  generatedTokens: number;
  prefillSeconds: number;
  decodeSeconds: number;
  stoppedBy: 'stop-token' | 'max-tokens' | 'interrupted' | 'context';
}

export interface GenerateOptions {
  maxTokens: number;
  stopIds: Set<number>;
  /** Polled between tokens; true ends generation early. */
  interrupted?: () => boolean;
  /** Tokens already in the session's cache that precede `promptIds` (for the repetition penalty). */
  history?: number[];
}

export async function* generateTokens(
  session: Session,
  sampler: Sampler,
  promptIds: number[],
  opts: GenerateOptions,
): AsyncGenerator<number, GenerationStats> {
  const history = [...(opts.history ?? []), ...promptIds];
  const t0 = performance.now();
  let logits = session.prefill(promptIds);
  const t1 = performance.now();
  let generated = 0;
  let stoppedBy: GenerationStats['stoppedBy'] = 'max-tokens';
  while (generated < opts.maxTokens) {
    if (opts.interrupted?.()) {
      stoppedBy = 'interrupted';
      break;
    }
    const id = sampler.sample(logits, history);
    generated++;
    history.push(id);
    if (opts.stopIds.has(id)) {
      stoppedBy = 'stop-token';
      break;
    }
    yield id;
    if (generated >= opts.maxTokens) break;
    if (session.position >= session.contextLength) {
      stoppedBy = 'context';
      break;
    }
    logits = session.step(id);
    await new Promise((r) => setImmediate(r));
  }
  const t2 = performance.now();
  return {
    promptTokens: promptIds.length,
    generatedTokens: generated,
    prefillSeconds: (t1 - t0) / 1000,
    decodeSeconds: (t2 - t1) / 1000,
    stoppedBy,
  };
}

export function formatStats(s: GenerationStats): string {
  const rate = (n: number, sec: number) => (sec > 0 ? (n / sec).toFixed(2) : '∞');
  // Decode rate counts the tokens that needed a decode step (all but the one sampled from prefill).
  const decoded = Math.max(0, s.generatedTokens - 1);
  return (
    `prefill: ${s.promptTokens} tokens in ${s.prefillSeconds.toFixed(2)} s (${rate(s.promptTokens, s.prefillSeconds)} tok/s); ` +
    `generated ${s.generatedTokens} tokens; decode: ${decoded} steps in ${s.decodeSeconds.toFixed(2)} s (${rate(decoded, s.decodeSeconds)} tok/s); stopped by ${s.stoppedBy}`
  );
}
