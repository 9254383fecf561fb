// Overflow detection for fp16 numerics: an observer that looks at every op's output and names the
// first non-finite value by layer, op and position, instead of letting NaN logits or garbage out.
import { ACTIVATION_POINTS, type ActivationPoint, type Observer } from '../model/forward.js';
import { LutraError } from '../util/errors.js';
import { Fp16Backend } from './backend.js';
import { firstNonFinite, FP16_MAX } from './round.js';

export type OnOverflow = 'error' | 'continue';

export interface OverflowEvent {
  layer: number;
  point: ActivationPoint;
  position: number;
  /** The first non-finite value (±Infinity or NaN), or null when a norm statistic overflowed. */
  value: number | null;
}

/** "layer 3 post_feedforward_layernorm output" / "embedding lookup × scale" / "final norm output". */
export function describeOp(layer: number, point: ActivationPoint): string {
  const what = ACTIVATION_POINTS[point];
  return point === 'embed' || point === 'final_norm' || point === 'logits' ? what : `layer ${layer} ${what}`;
}

export function describeOverflow(e: OverflowEvent): string {
  const value = e.value === null ? 'its fp16 mean of squares overflowed' : `value ${e.value}`;
  return `fp16 overflow at ${describeOp(e.layer, e.point)}, position ${e.position} (${value}; fp16 holds at most ±${FP16_MAX})`;
}

export class Fp16OverflowError extends LutraError {
  constructor(readonly event: OverflowEvent) {
    super(
      `${describeOverflow(event)}. Scale the residual stream for fp16: lutra audit-fp16 shows the peaks and ` +
        'lutra convert --fp16-scale auto applies the fix; --on-overflow continue runs on regardless.',
    );
  }
}

export class OverflowWatch {
  /** The first overflow seen (kept with --on-overflow continue). */
  first: OverflowEvent | null = null;

  /** With clamped residual adds, an infinite post-norm output is clipped by the add that follows. */
  private readonly clippedByAdd: ReadonlySet<ActivationPoint>;

  constructor(private readonly backend: Fp16Backend, private readonly onOverflow: OnOverflow) {
    this.clippedByAdd = new Set(backend.numerics.clampResidual ? ['attn_post', 'ffn_post'] : []);
  }

  reset(): void {
    this.first = null;
    this.backend.takeStatOverflow();
    this.backend.takeNonFinite();
  }

  readonly observer: Observer = (layer, point, data, rows, cols, pos0) => {
    if (this.first || this.clippedByAdd.has(point)) return; // after the first overflow, all is downstream of it
    const stat = this.backend.takeStatOverflow();
    // Every op output passes the backend's rounding, which flags non-finite results: scan only then.
    if (!this.backend.takeNonFinite() && !stat) return;
    const i = firstNonFinite(data, rows * cols);
    if (i < 0 && !stat) return;
    this.first = { layer, point, position: i < 0 ? pos0 : pos0 + Math.floor(i / cols), value: i < 0 ? null : data[i] };
    if (this.onOverflow === 'error') throw new Fp16OverflowError(this.first);
  };
}

/** Both observers, the watch first (so an overflow stops the pass before anyone sees it). */
export function chainObservers(a: Observer | undefined, b: Observer | undefined): Observer | undefined {
  if (!a) return b;
  if (!b) return a;
  return (...args) => {
    a(...args);
    b(...args);
  };
}
