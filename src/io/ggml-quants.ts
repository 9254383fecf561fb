// ggml block quantization codecs, bit-exact with ggml-quants.c (Q8_0 ↔ lutra int8:32, Q4_0 ↔ int4:32).
import { LutraError } from '../util/errors.js';
import { f16BitsToF32, f32ToF16Bits } from '../util/half.js';

// Both use blocks of 32 values; every step is done in float32 (Math.fround) like the C code.

export const QK8_0 = 32;
export const QK4_0 = 32;
const fr = Math.fround;

function checkBlocks(n: number, qk: number, what: string): number {
  if (n % qk !== 0) throw new LutraError(`${what}: ${n} values is not a multiple of the block size ${qk}`);
  return n / qk;
}

/** C roundf: round half away from zero. */
function roundf(x: number): number {
  return x < 0 ? -Math.round(-x) : Math.round(x);
}

/** Q8_0 block: f16 d = amax/127, then 32 × int8 q = roundf(x * (1/d)). 34 bytes per block. */
export function encodeQ8_0(x: Float32Array): Uint8Array {
  const nb = checkBlocks(x.length, QK8_0, 'encodeQ8_0');
  const out = new Uint8Array(nb * 34);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < nb; i++) {
    const base = i * QK8_0;
    let amax = 0;
    for (let j = 0; j < QK8_0; j++) {
      const a = Math.abs(x[base + j]!);
      if (a > amax) amax = a; // MAX(amax, fabsf(v)); NaN never wins, as in C
    }
    const d = fr(amax / 127);
    const id = d !== 0 ? fr(1 / d) : 0;
    const o = i * 34;
    dv.setUint16(o, f32ToF16Bits(d), true);
    for (let j = 0; j < QK8_0; j++) {
      const q = roundf(fr(x[base + j]! * id));
      out[o + 2 + j] = q & 0xff;
    }
  }
  return out;
}

export function decodeQ8_0(bytes: Uint8Array, n?: number): Float32Array {
  const nb = Math.floor(bytes.length / 34);
  const count = n ?? nb * QK8_0;
  if (count > nb * QK8_0) throw new LutraError(`decodeQ8_0: ${bytes.length} bytes hold ${nb * QK8_0} values, asked for ${count}`);
  const out = new Float32Array(count);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const s8 = new Int8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i * QK8_0 < count; i++) {
    const o = i * 34;
    const d = f16BitsToF32(dv.getUint16(o, true));
    for (let j = 0; j < QK8_0 && i * QK8_0 + j < count; j++) out[i * QK8_0 + j] = s8[o + 2 + j]! * d;
  }
  return out;
}

/**
 * Q4_0 block: `max` is the signed value of largest magnitude (first one wins on ties),
 * f16 d = max / -8, q = min(15, (int8)(x * (1/d) + 8.5)); 16 bytes of nibbles where byte j
 * holds element j in the low nibble and element j+16 in the high nibble. 18 bytes per block.
 */
export function encodeQ4_0(x: Float32Array): Uint8Array {
  const nb = checkBlocks(x.length, QK4_0, 'encodeQ4_0');
  const out = new Uint8Array(nb * 18);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < nb; i++) {
    const base = i * QK4_0;
    let amax = 0;
    let max = 0;
    for (let j = 0; j < QK4_0; j++) {
      const v = x[base + j]!;
      if (amax < Math.abs(v)) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = fr(max / -8);
    const id = d !== 0 ? fr(1 / d) : 0;
    const o = i * 18;
    dv.setUint16(o, f32ToF16Bits(d), true);
    for (let j = 0; j < QK4_0 / 2; j++) {
      const x0 = fr(x[base + j]! * id);
      const x1 = fr(x[base + QK4_0 / 2 + j]! * id);
      const q0 = Math.min(15, toInt8(fr(x0 + 8.5)));
      const q1 = Math.min(15, toInt8(fr(x1 + 8.5)));
      out[o + 2 + j] = (q0 & 0xff) | ((q1 << 4) & 0xff);
    }
  }
  return out;
}

/** C `(int8_t)f` for the in-range values Q4_0 produces: truncation toward zero. */
function toInt8(f: number): number {
  const t = Math.trunc(f);
  return ((t + 128) & 0xff) - 128;
}

export function decodeQ4_0(bytes: Uint8Array, n?: number): Float32Array {
  const nb = Math.floor(bytes.length / 18);
  const count = n ?? nb * QK4_0;
  if (count > nb * QK4_0) throw new LutraError(`decodeQ4_0: ${bytes.length} bytes hold ${nb * QK4_0} values, asked for ${count}`);
  const out = new Float32Array(count);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i * QK4_0 < count; i++) {
    const o = i * 18;
    const d = f16BitsToF32(dv.getUint16(o, true));
    for (let j = 0; j < QK4_0 / 2; j++) {
      const b = bytes[o + 2 + j]!;
      const k0 = i * QK4_0 + j;
      const k1 = k0 + QK4_0 / 2;
      if (k0 < count) out[k0] = ((b & 0x0f) - 8) * d;
      if (k1 < count) out[k1] = ((b >> 4) - 8) * d;
    }
  }
  return out;
}
