/**
 * A running 64-bit FNV-1a hash of a simulation's event trace: two runs with equal digests saw the
 * same events in the same order.
 *
 * @module
 */

/**
 * Hashes a sequence of event lines with 64-bit FNV-1a, over their UTF-16 code units, with a
 * newline after each line. Kept as two 32-bit halves, since `BigInt` arithmetic per character
 * would cost more than the rest of a simulation step.
 *
 * @example
 * ```ts
 * import { TraceDigest } from "@denoraft/raft";
 * const digest = new TraceDigest();
 * digest.add("timer 250 #3");
 * console.log(digest.hex, digest.count); // 16 hex digits, 1
 * ```
 */
export class TraceDigest {
  // The FNV-1a 64-bit offset basis, 0xcbf29ce484222325.
  #high = 0xcbf29ce4;
  #low = 0x84222325;
  #count = 0;

  /** Mixes one event line into the digest. */
  add(line: string): void {
    for (let i = 0; i < line.length; i++) this.#mix(line.charCodeAt(i));
    this.#mix(10);
    this.#count++;
  }

  /** How many lines were added. */
  get count(): number {
    return this.#count;
  }

  /** The digest as 16 hexadecimal digits. */
  get hex(): string {
    return this.#high.toString(16).padStart(8, "0") + this.#low.toString(16).padStart(8, "0");
  }

  /** XORs in a code unit, then multiplies by the FNV 64-bit prime 2^40 + 0x1b3, modulo 2^64. */
  #mix(codeUnit: number): void {
    const low = (this.#low ^ codeUnit) >>> 0;
    const lowProduct = low * 0x1b3; // below 2^41: exact in a double
    const carry = Math.floor(lowProduct / 2 ** 32);
    this.#low = lowProduct >>> 0;
    // 2^40 * low lands in the high half as low << 8.
    this.#high = (Math.imul(this.#high, 0x1b3) + carry + (low << 8)) >>> 0;
  }
}
