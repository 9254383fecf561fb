// Read-bandwidth probe for `lutra bench` (build/probe.wasm): sums a slice of the shared memory
// with v128 loads. The sum is returned so the loads cannot be optimized away.

/** Write `value` over [ptr, ptr + bytes): touches every page so reads hit real memory, not the zero page. */
export function fill(ptr: usize, bytes: usize, value: u8): void {
  memory.fill(ptr, value, bytes);
}

/** Sum [ptr, ptr + bytes) as i32 lanes; `bytes` is a multiple of 64. Four accumulators keep loads independent. */
export function sum(ptr: usize, bytes: usize): i32 {
  let a0 = i32x4.splat(0);
  let a1 = i32x4.splat(0);
  let a2 = i32x4.splat(0);
  let a3 = i32x4.splat(0);
  const end = ptr + bytes;
  for (let p = ptr; p < end; p += 64) {
    a0 = i32x4.add(a0, v128.load(p));
    a1 = i32x4.add(a1, v128.load(p, 16));
    a2 = i32x4.add(a2, v128.load(p, 32));
    a3 = i32x4.add(a3, v128.load(p, 48));
  }
  const s = i32x4.add(i32x4.add(a0, a1), i32x4.add(a2, a3));
  return i32x4.extract_lane(s, 0) + i32x4.extract_lane(s, 1) + i32x4.extract_lane(s, 2) + i32x4.extract_lane(s, 3);
}
