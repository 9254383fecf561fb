// Let other work on the event loop run (timers, I/O, other sessions' tokens) before going on.
// setImmediate where it exists (Node); elsewhere a MessageChannel message, which unlike a 0 ms
// timeout is not clamped to 4 ms after a few nested calls.
let channel: MessageChannel | null = null;
const waiting: (() => void)[] = [];

export function yieldToEventLoop(): Promise<void> {
  if (typeof setImmediate === 'function') return new Promise((resolve) => setImmediate(resolve));
  if (channel === null) {
    channel = new MessageChannel();
    channel.port1.onmessage = () => waiting.shift()?.();
  }
  return new Promise((resolve) => {
    waiting.push(resolve);
    channel!.port2.postMessage(0);
  });
}
