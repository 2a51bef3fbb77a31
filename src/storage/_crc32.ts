/**
 * CRC-32 (IEEE 802.3, the polynomial of zlib and PNG), to detect damaged records on disk.
 *
 * @module
 */

const TABLE: Uint32Array = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/**
 * The CRC-32 of `bytes`, as an unsigned 32-bit integer. Pass the CRC of the bytes before them as
 * `previous` to checksum a sequence piece by piece: `crc32(b, crc32(a))` is the CRC of `a`
 * followed by `b`.
 *
 * @example
 * ```ts
 * import { crc32 } from "./_crc32.ts";
 * console.log(crc32(new TextEncoder().encode("123456789")).toString(16)); // "cbf43926"
 * const [a, b] = [new TextEncoder().encode("1234"), new TextEncoder().encode("56789")];
 * console.log(crc32(b, crc32(a)).toString(16)); // "cbf43926"
 * ```
 */
export function crc32(bytes: Uint8Array, previous = 0): number {
  let c = (previous ^ 0xffffffff) >>> 0;
  for (let i = 0; i < bytes.length; i++) {
    c = TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  }
  return (c ^ 0xffffffff) >>> 0;
}
