/**
 * The challenge-response that opens every WebSocket link between peers. Both sides prove they
 * hold the cluster's shared secret without sending it: each signs, with HMAC-SHA-256, both sides'
 * fresh nonces and both peer indexes under its own role label.
 *
 * ```
 * server -> dialer   challenge { nonce: Ns }
 * dialer -> server   hello     { from, to, nonce: Nd, proof: HMAC(secret, "dialer|from|to|Ns|Nd") }
 * server -> dialer   welcome   { proof: HMAC(secret, "server|from|to|Ns|Nd") }
 * ```
 *
 * Fresh nonces on both sides make an old proof useless on a new connection; the role labels keep
 * one side's proof from being reflected back as the other's; the indexes bind the proof to the
 * link, so a peer cannot claim another peer's index.
 *
 * @module
 */

import { decodeBase64, encodeBase64 } from "./_base64.ts";

/** Bytes of randomness in one nonce. */
const NONCE_BYTES = 32;

/** Which side of a link signs: the side that dialed, or the side that accepted. */
export type HandshakeRole = "dialer" | "server";

/** What a proof covers: the link's two ends and both nonces. */
export interface HandshakeTranscript {
  /** Peer index of the dialing side. */
  from: number;
  /** Peer index of the accepting side. */
  to: number;
  /** The server's nonce (base64). */
  serverNonce: string;
  /** The dialer's nonce (base64). */
  dialerNonce: string;
}

/**
 * Makes the HMAC key from the shared secret. Throws a `RangeError` for a secret shorter than 16
 * bytes: a short secret could be guessed offline from one recorded handshake.
 */
export async function importSecret(secret: string | Uint8Array): Promise<CryptoKey> {
  const bytes = typeof secret === "string" ? new TextEncoder().encode(secret) : secret;
  if (bytes.length < 16) {
    throw new RangeError(`Cluster secret must be at least 16 bytes, got ${bytes.length}`);
  }
  return await crypto.subtle.importKey(
    "raw",
    new Uint8Array(bytes),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign", "verify"],
  );
}

/** A fresh random nonce, as base64. */
export function newNonce(): string {
  return encodeBase64(crypto.getRandomValues(new Uint8Array(NONCE_BYTES)));
}

/** The proof `role` sends for `transcript`, as base64. */
export async function signTranscript(
  key: CryptoKey,
  role: HandshakeRole,
  transcript: HandshakeTranscript,
): Promise<string> {
  const signature = await crypto.subtle.sign("HMAC", key, transcriptBytes(role, transcript));
  return encodeBase64(new Uint8Array(signature));
}

/** Whether `proof` is `role`'s valid proof for `transcript`; compares in constant time. */
export async function verifyTranscript(
  key: CryptoKey,
  role: HandshakeRole,
  transcript: HandshakeTranscript,
  proof: string,
): Promise<boolean> {
  const signature = decodeBase64(proof);
  if (signature === undefined) return false;
  return await crypto.subtle.verify("HMAC", key, signature, transcriptBytes(role, transcript));
}

function transcriptBytes(
  role: HandshakeRole,
  transcript: HandshakeTranscript,
): Uint8Array<ArrayBuffer> {
  const { from, to, serverNonce, dialerNonce } = transcript;
  return new TextEncoder().encode(
    `denoraft-ws-v1|${role}|${from}|${to}|${serverNonce}|${dialerNonce}`,
  );
}
