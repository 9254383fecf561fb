// A pool worker under Node's worker_threads: the loop is in worker-loop.ts.
import { workerData } from 'node:worker_threads';
import { runPoolWorker, type PoolWorkerData } from './worker-loop.js';

runPoolWorker(workerData as PoolWorkerData);
