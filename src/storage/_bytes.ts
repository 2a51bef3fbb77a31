/**
 * Numbers as bytes, for the durable persisters' binary formats and checksums.
 *
 * @module
 */

/** `values` as consecutive little-endian float64s, 8 bytes each. */
export function float64s(...values: number[]): Uint8Array {
  const bytes = new Uint8Array(8 * values.length);
  const view = new DataView(bytes.buffer);
  values.forEach((value, i) => view.setFloat64(8 * i, value, true));
  return bytes;
}
