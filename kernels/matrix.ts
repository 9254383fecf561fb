// A weight matrix as the kernels see it: a 64-byte descriptor the host writes at prepare() time
// (src/backend/wasm/matrix.ts writes the same layout). Field offsets are in bytes.
export const F32: i32 = 0;
export const F16: i32 = 1;
export const BF16: i32 = 2;
export const INT8: i32 = 3;
export const INT4: i32 = 4;
export const LUT: i32 = 5;

/** Storage format (one of the codes above). */
@inline export function fmtOf(d: usize): i32 { return load<i32>(d, 0); }
/** Address of row 0 of the codes/values. */
@inline export function dataOf(d: usize): usize { return load<u32>(d, 4); }
@inline export function rowsOf(d: usize): i32 { return load<i32>(d, 8); }
@inline export function colsOf(d: usize): i32 { return load<i32>(d, 12); }
/** int formats: address of the f32 scales; lut: address of the f32 tables. */
@inline export function auxOf(d: usize): usize { return load<u32>(d, 16); }
/** int formats: scales per row (0 for per-tensor, so every row reads scale 0). */
@inline export function scalesPerRowOf(d: usize): i32 { return load<i32>(d, 20); }
/** int formats: elements per scale block (cols for per-channel and per-tensor). */
@inline export function blockOf(d: usize): i32 { return load<i32>(d, 24); }
/** lut: bits per code. */
@inline export function bitsOf(d: usize): i32 { return load<i32>(d, 28); }
/** lut: rows sharing one table (0: one table for the whole tensor). */
@inline export function tableGroupOf(d: usize): i32 { return load<i32>(d, 32); }
/** Bytes per row of data. */
@inline export function strideOf(d: usize): i32 { return load<i32>(d, 36); }

@inline export function rowPtr(d: usize, r: i32): usize {
  return dataOf(d) + <usize>r * <usize>strideOf(d);
}

/** Address of the scales of row r (int formats). */
@inline export function rowScales(d: usize, r: i32): usize {
  return auxOf(d) + ((<usize>r * <usize>scalesPerRowOf(d)) << 2);
}

/** Index of the table row r reads (lut). */
@inline function tableOf(d: usize, r: i32): usize {
  const g = tableGroupOf(d);
  return g == 0 ? 0 : <usize>(r / g);
}

/** Address of the table of row r (lut). */
@inline export function rowTable(d: usize, r: i32): usize {
  return auxOf(d) + ((tableOf(d, r) << <usize>bitsOf(d)) << 2);
}

/** int formats: 1 when matmul quantizes activations to q8 (set by the host at prepare()). */
@inline export function q8Of(d: usize): i32 { return load<i32>(d, 40); }

/** f16: 1 when no value is Inf/NaN, so the 4-op conversion (f16x4Finite) is exact. */
@inline export function f16FiniteOf(d: usize): i32 { return load<i32>(d, 44); }

/** Activation blocks of 32 per weight scale (0: one scale for the whole row). */
@inline export function q8PerScale(d: usize): i32 {
  return scalesPerRowOf(d) <= 1 ? 0 : blockOf(d) >> 5;
}

/** lut with q8 activations: address of the rounded tables as int8 (2^bits bytes each; lutQ8Tables). */
@inline export function lutI8Of(d: usize): usize { return load<u32>(d, 48); }
/** lut with q8 activations: address of the f32 scale of each row (its table's). */
@inline export function lutScalesOf(d: usize): usize { return load<u32>(d, 52); }

/** lut with q8 activations: 1 when full blocks of codes are in the planar layout (lut5..7, lut-q8.ts lutToPlanar). */
@inline export function lutPlanarOf(d: usize): i32 { return load<i32>(d, 56); }

/** Address of the int8 table of row r (lut with q8 activations). */
@inline export function rowTableI8(d: usize, r: i32): usize {
  return lutI8Of(d) + (tableOf(d, r) << <usize>bitsOf(d));
}
