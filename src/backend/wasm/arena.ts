// The one shared WebAssembly.Memory every thread's kernels run on, and the bump allocator that
// hands out its bytes. Nothing is ever freed: weights and KV caches live as long as the backend,
// and per-forward scratch is reused (see ScratchStack). Memory only grows, and growing a shared
// memory keeps old views valid, so Float32Arrays handed out earlier never detach.
import { LutraError } from '../../util/errors.js';
import { INITIAL_PAGES, MAX_PAGES } from './kernels.js';

const PAGE = 65536;
/** Every allocation is padded so vector loads just past the end (tails, bitstreams) stay in bounds. */
const PAD = 16;

export class Arena {
  readonly memory: WebAssembly.Memory;
  private top: number;
  /** Every SharedArrayBuffer this memory has shown us: views made before a grow belong to older ones. */
  private readonly buffers = new WeakSet<ArrayBufferLike>();
  private u8!: Uint8Array;

  constructor(base: number) {
    this.memory = new WebAssembly.Memory({ initial: INITIAL_PAGES, maximum: MAX_PAGES, shared: true });
    this.top = Math.ceil(base / PAGE) * PAGE;
    this.refresh();
  }

  private refresh(): void {
    const buf = this.memory.buffer;
    this.buffers.add(buf);
    this.u8 = new Uint8Array(buf);
  }

  /** Reserve n bytes aligned to `align`; returns the address. Fresh bytes are zero. */
  bytes(n: number, align = 64): number {
    const at = Math.ceil(this.top / align) * align;
    const end = at + n + PAD;
    const have = this.memory.buffer.byteLength;
    if (end > have) {
      const pages = Math.ceil((end - have) / PAGE);
      if (have / PAGE + pages > MAX_PAGES) {
        throw new LutraError(`wasm backend: out of memory (${(end / 2 ** 30).toFixed(2)} GiB needed, the WebAssembly limit is 4 GiB)`);
      }
      this.memory.grow(pages);
      this.refresh();
    }
    this.top = end;
    return at;
  }

  f32(n: number): Float32Array {
    const at = this.bytes(n * 4); // may grow the memory: take .buffer after
    return new Float32Array(this.memory.buffer, at, n);
  }

  copyIn(src: Uint8Array, align = 64): number {
    const at = this.bytes(src.byteLength, align);
    this.u8.set(src, at);
    return at;
  }

  get used(): number {
    return this.top;
  }

  /** The address of an activation array, which must be a view of this memory. */
  addressOf(a: Float32Array, what: string): number {
    if (!this.buffers.has(a.buffer) && !this.sameMemory(a)) {
      throw new LutraError(`wasm backend: ${what} is not in the backend's memory; allocate it with backend.alloc() or scratch()`);
    }
    return a.byteOffset;
  }

  /**
   * V8 may hand out a new SharedArrayBuffer object for the same shared memory (seen after other
   * threads attach), so identity alone can miss: flip a byte through our view and see whether
   * the caller's view sees it. Runs once per new buffer object, between jobs.
   */
  private sameMemory(a: Float32Array): boolean {
    if (!(a.buffer instanceof SharedArrayBuffer) || a.length === 0) return false;
    const mine = new Uint8Array(this.memory.buffer);
    if (a.byteOffset + a.byteLength > mine.length) return false;
    const theirs = new Uint8Array(a.buffer, a.byteOffset, 1);
    const old = mine[a.byteOffset];
    mine[a.byteOffset] = old ^ 0xff;
    const same = theirs[0] === (old ^ 0xff);
    mine[a.byteOffset] = old;
    if (same) this.buffers.add(a.buffer);
    return same;
  }
}

/**
 * Per-forward scratch: bump allocation in one chunk, reset at every forward. When a forward needs
 * more, a bigger chunk is taken from the arena (the old one is abandoned, so live views never alias).
 */
export class ScratchStack {
  private base = 0;
  private size = 0;
  private used = 0;

  constructor(private readonly arena: Arena) {}

  take(n: number): Float32Array {
    const bytes = Math.ceil((n * 4) / 64) * 64;
    if (this.used + bytes > this.size) {
      this.size = Math.max(2 * this.size, bytes, 1 << 20);
      this.base = this.arena.bytes(this.size);
      this.used = 0;
    }
    const at = this.base + this.used;
    this.used += bytes;
    const view = new Float32Array(this.arena.memory.buffer, at, n);
    view.fill(0);
    return view;
  }

  reset(): void {
    this.used = 0;
  }
}

/** A shared buffer that grows (by doubling) to the largest size asked of it; contents are not kept across growth. */
export class GrowingBuffer {
  private at = 0;
  private size = 0;

  constructor(private readonly arena: Arena) {}

  /** Address of at least n bytes. */
  reserve(n: number): number {
    if (n > this.size) {
      this.size = Math.max(n, 2 * this.size);
      this.at = this.arena.bytes(this.size);
    }
    return this.at;
  }
}
