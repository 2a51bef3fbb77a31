/**
 * Base64 for snapshot chunks, which travel inside JSON RPC arguments. Uses the built-in
 * `Uint8Array.prototype.toBase64` and `Uint8Array.fromBase64` where the runtime has them.
 *
 * @module
 */

interface Base64Uint8Array {
  toBase64?(): string;
}
interface Base64Uint8ArrayConstructor {
  fromBase64?(text: string): Uint8Array;
}

/** Standard base64 (with padding) of `bytes`. */
export function encodeBase64(bytes: Uint8Array): string {
  const native = (bytes as Base64Uint8Array).toBase64;
  if (native !== undefined) return native.call(bytes);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

/** The bytes of standard base64 `text`, or `undefined` if it is not valid base64. */
export function decodeBase64(text: string): Uint8Array | undefined {
  const native = (Uint8Array as Base64Uint8ArrayConstructor).fromBase64;
  try {
    if (native !== undefined) return native(text);
    const binary = atob(text);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  } catch {
    return undefined;
  }
}
