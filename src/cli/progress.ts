// Progress bars on stderr (only when it is a terminal), for long writes and conversions.
import cliProgress from 'cli-progress';
import { onInterrupt } from '../util/atomic-output.js';

export interface Progress {
  update(done: number): void;
  stop(): void;
}

export function byteProgress(label: string, total: number): Progress {
  if (!process.stderr.isTTY) return { update() {}, stop() {} };
  const mb = (n: number) => (n / 2 ** 20).toFixed(1);
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: `${label} [{bar}] {percentage}% | {doneMB}/{totalMB} MB | ETA {eta_formatted}`,
      hideCursor: true,
      etaBuffer: 50,
    },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total, 0, { doneMB: mb(0), totalMB: mb(total) });
  // An interruption stops the bar, which shows the cursor it hid.
  const forget = onInterrupt(() => bar.stop());
  return {
    update(done) {
      bar.update(done, { doneMB: mb(done), totalMB: mb(total) });
    },
    stop() {
      forget();
      bar.stop();
    },
  };
}

/** Tensors done of total, with the current tensor's name and the time left. */
export function tensorProgress(label: string, total: number): { update(done: number, name: string): void; stop(): void } {
  if (!process.stderr.isTTY) return { update() {}, stop() {} };
  const bar = new cliProgress.SingleBar(
    { stream: process.stderr, format: `${label} [{bar}] {value}/{total} tensors | ETA {eta_formatted} | {name}`, hideCursor: true, etaBuffer: 20 },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total, 0, { name: '' });
  const forget = onInterrupt(() => bar.stop());
  return {
    update(done, name) {
      bar.update(done, { name });
    },
    stop() {
      forget();
      bar.stop();
    },
  };
}
