// The one shared WebAssembly.Memory every thread's kernels run on, and the allocator that hands
// out its bytes: a bump pointer plus a free list. Weights live as long as the backend; KV caches
// and grown scratch buffers are given back with free() and their bytes reused, so a server that
// creates and drops sessions all day stays at its high-water mark. A WebAssembly memory never
// shrinks, and growing a shared memory keeps old views valid, so views handed out never detach.
// An unshared memory (one thread in a page without cross-origin isolation) would detach every
// view when it grows, so it is made at its full size up front: address space only, since pages
// are committed when first touched.
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
  /** Freed blocks [address, bytes], sorted by address, adjacent ones merged. */
  private readonly free: { at: number; size: number }[] = [];
  /** Bytes of each live block handed out by bytes(), by address (what free() gives back). */
  private readonly sizes = new Map<number, number>();
  /** The highest the bump pointer has been: memory above it has never been handed out. */
  private dirtyTop = 0;

  constructor(base: number, readonly shared = true) {
    this.memory = new WebAssembly.Memory({ initial: shared ? INITIAL_PAGES : MAX_PAGES, maximum: MAX_PAGES, shared });
    this.top = Math.ceil(base / PAGE) * PAGE;
    this.refresh();
  }

  private refresh(): void {
    const buf = this.memory.buffer;
    this.buffers.add(buf);
    this.u8 = new Uint8Array(buf);
  }

  /** Reserve n bytes aligned to `align`; returns the address. The bytes are zero. */
  bytes(n: number, align = 64): number {
    const need = n + PAD;
    // First fit among freed blocks (reused bytes are zeroed: callers rely on fresh memory being zero).
    for (let i = 0; i < this.free.length; i++) {
      const b = this.free[i];
      const at = Math.ceil(b.at / align) * align;
      if (at + need > b.at + b.size) continue;
      this.free.splice(i, 1);
      if (at > b.at) this.insertFree(b.at, at - b.at);
      if (b.at + b.size > at + need) this.insertFree(at + need, b.at + b.size - at - need);
      this.u8.fill(0, at, at + need);
      this.sizes.set(at, need);
      return at;
    }
    const at = Math.ceil(this.top / align) * align;
    const end = at + need;
    const have = this.memory.buffer.byteLength;
    if (end > have) {
      const pages = Math.ceil((end - have) / PAGE);
      if (have / PAGE + pages > MAX_PAGES) {
        throw new LutraError(`wasm backend: out of memory (${(end / 2 ** 30).toFixed(2)} GiB needed, the WebAssembly limit is 4 GiB)`);
      }
      this.memory.grow(pages);
      this.refresh();
    }
    if (at > this.top) this.insertFree(this.top, at - this.top);
    // Bytes below the highest top ever reached may have been used and given back: zero them.
    if (at < this.dirtyTop) this.u8.fill(0, at, Math.min(end, this.dirtyTop));
    this.top = end;
    this.dirtyTop = Math.max(this.dirtyTop, end);
    this.sizes.set(at, need);
    return at;
  }

  /** Give back a block returned by bytes() (or the address of a view from f32()). */
  release(at: number): void {
    const size = this.sizes.get(at);
    if (size === undefined) throw new Error(`internal: arena release of ${at}, which is not a live block`);
    this.sizes.delete(at);
    this.insertFree(at, size);
  }

  private insertFree(at: number, size: number): void {
    if (size <= 0) return;
    let i = 0;
    while (i < this.free.length && this.free[i].at < at) i++;
    this.free.splice(i, 0, { at, size });
    // Merge with the next and the previous block where they touch.
    if (i + 1 < this.free.length && at + size === this.free[i + 1].at) {
      this.free[i].size += this.free[i + 1].size;
      this.free.splice(i + 1, 1);
    }
    if (i > 0 && this.free[i - 1].at + this.free[i - 1].size === at) {
      this.free[i - 1].size += this.free[i].size;
      this.free.splice(i, 1);
      i--;
    }
    // A free block at the top gives its bytes back to the bump pointer.
    const last = this.free[this.free.length - 1];
    if (last.at + last.size === this.top) {
      this.top = last.at;
      this.free.pop();
    }
  }

  /** Bytes handed out and not given back (weights, caches, scratch). */
  get live(): number {
    let n = 0;
    for (const s of this.sizes.values()) n += s;
    return n;
  }

  f32(n: number): Float32Array {
    const at = this.bytes(n * 4); // may grow the memory: take .buffer after
    return new Float32Array(this.memory.buffer, at, n);
  }

  /** Copy n bytes from address src to address dst (blocks this arena handed out). */
  copy(dst: number, src: number, n: number): void {
    this.u8.copyWithin(dst, src, src + n);
  }

  copyIn(src: Uint8Array, align = 64): number {
    const at = this.bytes(src.byteLength, align);
    this.u8.set(src, at);
    return at;
  }

  /** The high-water mark: bytes of memory in use or on the free list. */
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
    if (typeof SharedArrayBuffer !== 'function' || !(a.buffer instanceof SharedArrayBuffer) || a.length === 0) return false;
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
  private retired: number[] = [];

  constructor(private readonly arena: Arena) {}

  take(n: number): Float32Array {
    const bytes = Math.ceil((n * 4) / 64) * 64;
    if (this.used + bytes > this.size) {
      // Views of the old chunk may still be live in this forward: keep it until reset().
      if (this.base !== 0) this.retired.push(this.base);
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
    for (const at of this.retired) this.arena.release(at);
    this.retired = [];
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
      if (this.size > 0) this.arena.release(this.at);
      this.size = Math.max(n, 2 * this.size);
      this.at = this.arena.bytes(this.size);
    }
    return this.at;
  }
}
