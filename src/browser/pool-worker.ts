// A pool worker in the browser: a nested Web Worker that gets its start data as one message.
import { runPoolWorker, type PoolWorkerData } from '../backend/wasm/worker-loop.js';

const scope = self as unknown as { onmessage: ((e: MessageEvent<PoolWorkerData>) => void) | null };
scope.onmessage = (e) => {
  scope.onmessage = null;
  runPoolWorker(e.data);
};
