// Per-layer hidden states of the divergence harness: the residual stream leaving every layer,
// captured at every fed position, and how far a candidate's streams are from the reference's.
//
// Two measurements per layer l:
//  - through the stack: both models run on their own, so the candidate's layer l sees the
//    candidate's (already drifted) input; the error accumulated over layers 0..l.
//  - single-layer: the candidate runs again with its stream replaced by the reference's after
//    every layer, so its layer l sees exactly the reference's input; the error layer l adds on its
//    own (a quantized layer's audit in isolation). With only some parts quantized, a layer whose
//    weights are unchanged reproduces the reference's output up to rounding.
import type { Observer } from '../model/forward.js';
import { cosine } from './metrics.js';

/** Residual stream leaving every layer, for every fed position: layers[l][pos * H + i]. */
export class HiddenCapture {
  readonly layers: Float32Array[];
  private cursor = 0;
  /**
   * With `substitute` (another model's capture over the same tokens), the stream is replaced by
   * that capture's after each layer, once recorded here: every layer then runs on the other
   * model's input (the single-layer measurement).
   */
  constructor(readonly numLayers: number, readonly hidden: number, readonly positions: number, readonly substitute?: HiddenCapture) {
    this.layers = Array.from({ length: numLayers }, () => new Float32Array(positions * hidden));
  }
  get captured(): number {
    return this.cursor;
  }
  readonly observer: Observer = (layer, point, data, rows, cols) => {
    if (point !== 'residual') return;
    if (cols !== this.hidden) throw new Error(`internal: residual of width ${cols}, expected ${this.hidden}`);
    if (this.cursor + rows > this.positions) throw new Error(`internal: hidden capture overflow at position ${this.cursor + rows}`);
    const at = this.cursor * cols;
    this.layers[layer].set(data.subarray(0, rows * cols), at);
    // `data` is the live stream (engine memory): what is written here is the next layer's input.
    if (this.substitute) data.set(this.substitute.layers[layer].subarray(at, at + rows * cols));
    if (layer === this.numLayers - 1) this.cursor += rows;
  };
}

/** One measurement per layer, over positions. */
export interface LayerErrors {
  /** Minimum over positions of the cosine of the candidate's and the reference's streams. */
  minCosine: number[];
  meanCosine: number[];
  /** Position (0-based, over prompt + generated) of that minimum. */
  worstPosition: number[];
  /** Mean over positions of ‖candidate − reference‖ / ‖reference‖. */
  meanRelError: number[];
}

export interface LayerStats extends LayerErrors {
  /** First layer whose minimum cosine (through the stack) is below the threshold, or null. */
  firstBelow: number | null;
  threshold: number;
  /** Each layer on the reference's input (present when measured). */
  single?: LayerErrors;
}

/** Candidate capture `a` against reference capture `b`, over the first `positions` positions. */
export function layerErrors(a: HiddenCapture, b: HiddenCapture, positions: number): LayerErrors {
  const H = a.hidden;
  const out: LayerErrors = { minCosine: [], meanCosine: [], worstPosition: [], meanRelError: [] };
  for (let l = 0; l < a.numLayers; l++) {
    let min = Infinity;
    let worst = -1;
    let sum = 0;
    let rel = 0;
    for (let t = 0; t < positions; t++) {
      const x = a.layers[l].subarray(t * H, (t + 1) * H);
      const y = b.layers[l].subarray(t * H, (t + 1) * H);
      const c = cosine(x, y);
      sum += c;
      if (!(c >= min)) {
        min = c;
        worst = t;
      }
      let d2 = 0;
      let y2 = 0;
      for (let i = 0; i < H; i++) {
        d2 += (x[i] - y[i]) ** 2;
        y2 += y[i] * y[i];
      }
      rel += Math.sqrt(d2 / y2);
    }
    out.minCosine.push(min);
    out.meanCosine.push(sum / positions);
    out.worstPosition.push(worst);
    out.meanRelError.push(rel / positions);
  }
  return out;
}

/** Through-the-stack errors of `a` against `b`, plus single-layer ones from `single` (a capture substituted with b). */
export function layerStats(a: HiddenCapture, b: HiddenCapture, positions: number, threshold: number, single?: HiddenCapture): LayerStats {
  const e = layerErrors(a, b, positions);
  const fb = e.minCosine.findIndex((c) => !(c >= threshold));
  return { ...e, firstBelow: fb < 0 ? null : fb, threshold, ...(single ? { single: layerErrors(single, b, positions) } : {}) };
}
