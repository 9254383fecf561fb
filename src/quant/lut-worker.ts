// Worker for quantizeLut: joins each batch it is sent, claiming groups from the shared counter.
import { parentPort } from 'node:worker_threads';
import { CTRL, runBatch, type LutBatch } from './lut.js';

let views: { x: SharedArrayBuffer; codes: SharedArrayBuffer; table: SharedArrayBuffer; fx: Float32Array; uc: Uint8Array; ft: Float32Array } | undefined;

parentPort!.on('message', (b: LutBatch) => {
  const ctrl = new Int32Array(b.ctrl);
  // Announce first, then check the generation (the caller does the reverse), so a late message
  // for a finished batch never touches the next one.
  Atomics.add(ctrl, CTRL.ACTIVE, 1);
  try {
    if (Atomics.load(ctrl, CTRL.GEN) !== b.gen) return;
    if (!views || views.x !== b.x || views.codes !== b.codes || views.table !== b.table) {
      views = { x: b.x, codes: b.codes, table: b.table, fx: new Float32Array(b.x), uc: new Uint8Array(b.codes), ft: new Float32Array(b.table) };
    }
    runBatch(b, ctrl, views.fx, views.uc, views.ft);
  } catch {
    Atomics.store(ctrl, CTRL.ERROR, 1);
    Atomics.notify(ctrl, CTRL.DONE);
  } finally {
    Atomics.sub(ctrl, CTRL.ACTIVE, 1);
    Atomics.notify(ctrl, CTRL.ACTIVE);
  }
});
