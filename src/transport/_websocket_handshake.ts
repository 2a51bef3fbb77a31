/**
 * How a WebSocket link between peers is authenticated, in two steps. Both prove the cluster's
 * shared secret without sending it, with HMAC-SHA-256.
 *
 * First, before any WebSocket exists, the dialer's upgrade request carries a token in its query:
 *
 * ```
 * GET /?from&to&time&nonce&proof   proof = HMAC(secret, "upgrade|from|to|time|nonce")
 * ```
 *
 * The server checks it before it upgrades: a client without the secret gets HTTP 401 and never
 * holds more than its request head. A token is good within the replay window of the server's
 * clock, and once: the server remembers its nonce ({@linkcode UpgradeReplayGuard}).
 *
 * Then the challenge-response, on the new WebSocket, in which the server proves itself too and
 * the dialer signs a nonce the server just drew (so even a token seen in transit and used first
 * by someone else, on `ws://`, gets no further):
 *
 * ```
 * server -> dialer   challenge { nonce: Ns }
 * dialer -> server   hello     { from, to, nonce: Nd, address: A,
 *                                proof: HMAC(secret, "dialer|from|to|Ns|Nd|A") }
 * server -> dialer   welcome   { proof: HMAC(secret, "server|from|to|Ns|Nd|A") }
 * ```
 *
 * Fresh nonces on both sides make an old proof useless on a new connection; the role labels keep
 * one side's proof from being reflected back as the other's; the indexes bind the proof to the
 * link, so a peer cannot claim another peer's index. `A` is the URL at which the dialer's own
 * server is reached: a server that has no link to the dialer yet (a peer added to the cluster
 * while it was away) dials it back there, so the proof covers it too, and no one without the
 * secret can send a server elsewhere.
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
  /** The URL the dialer advertises for its own server. */
  dialerAddress: string;
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
  const { from, to, serverNonce, dialerNonce, dialerAddress } = transcript;
  // The address comes last, so a "|" in it cannot shift the fields before it.
  return new TextEncoder().encode(
    `denoraft-ws-v2|${role}|${from}|${to}|${serverNonce}|${dialerNonce}|${dialerAddress}`,
  );
}

// ---- Before the upgrade: the dialer's token, so that no unauthenticated client gets a socket. ----

/**
 * The dialer's credentials, sent in the query of its upgrade request: who dials whom, when (wall
 * clock, ms since the epoch), a fresh nonce, and an HMAC over all of them.
 */
export interface UpgradeToken {
  /** Peer index of the dialer. */
  from: number;
  /** Peer index of the server it means to reach. */
  to: number;
  /** `Date.now()` when the dialer signed it. */
  time: number;
  /** 16 random bytes, hex. */
  nonce: string;
  /** HMAC-SHA-256 over the fields above, hex. */
  proof: string;
}

/** Signs a fresh token for a dial from peer `from` to peer `to` at `time`. */
export async function signUpgrade(
  key: CryptoKey,
  from: number,
  to: number,
  time: number = Date.now(),
): Promise<UpgradeToken> {
  const nonce = toHex(crypto.getRandomValues(new Uint8Array(16)));
  const signature = await crypto.subtle.sign("HMAC", key, upgradeBytes(from, to, time, nonce));
  return { from, to, time, nonce, proof: toHex(new Uint8Array(signature)) };
}

/** Whether `token`'s proof is valid for its fields; compares in constant time. */
export async function verifyUpgrade(key: CryptoKey, token: UpgradeToken): Promise<boolean> {
  const { from, to, time, nonce, proof } = token;
  const signature = fromHex(proof);
  return await crypto.subtle.verify("HMAC", key, signature, upgradeBytes(from, to, time, nonce));
}

/** `url` with `token` in its query (replacing any earlier token). */
export function withUpgradeToken(url: string, token: UpgradeToken): URL {
  const withToken = new URL(url);
  for (const field of ["from", "to", "time", "nonce", "proof"] as const) {
    withToken.searchParams.set(field, String(token[field]));
  }
  return withToken;
}

/** The token in a request target's query, or a sentence saying why there is none. */
export function parseUpgradeToken(target: string): UpgradeToken | string {
  const query = target.indexOf("?");
  if (query < 0) return "Upgrade request carries no token";
  const params = new URLSearchParams(target.slice(query + 1));
  const [from, to, time] = (["from", "to", "time"] as const).map((name) => {
    const text = params.get(name) ?? "";
    const value = /^[0-9]{1,16}$/.test(text) ? Number(text) : -1;
    return Number.isSafeInteger(value) ? value : -1;
  });
  const nonce = params.get("nonce") ?? "";
  const proof = params.get("proof") ?? "";
  if (from! < 0 || to! < 0 || time! < 0) return "Upgrade token has malformed numbers";
  if (!/^[0-9a-f]{32}$/.test(nonce) || !/^[0-9a-f]{64}$/.test(proof)) {
    return "Upgrade token has a malformed nonce or proof";
  }
  return { from: from!, to: to!, time: time!, nonce, proof };
}

/**
 * Remembers the nonces of the valid tokens seen within the replay window, per dialer, so that a
 * recorded token cannot be used again. Memory is bounded: past `capacityPerPeer` nonces, the
 * oldest is forgotten, and every token no newer than a forgotten one is refused from then on.
 * An honest dialer signs each token just before it uses it, so its tokens are never that old.
 * Dialers the server has no link to yet (strangers) are tracked only while fewer than
 * `maxPeers` dialers are, so that a holder of the secret cannot make it remember one entry for
 * every peer id it cares to claim.
 */
export class UpgradeReplayGuard {
  readonly #windowMs: number;
  readonly #capacityPerPeer: number;
  readonly #maxPeers: number;
  readonly #byPeer = new Map<number, { seen: Map<string, number>; floor: number }>();

  /**
   * Tokens more than `windowMs` from the server's clock are refused; at most `capacityPerPeer`
   * are remembered per dialer, and strangers only while fewer than `maxPeers` dialers are.
   */
  constructor(windowMs: number, capacityPerPeer: number, maxPeers = Infinity) {
    this.#windowMs = windowMs;
    this.#capacityPerPeer = capacityPerPeer;
    this.#maxPeers = maxPeers;
  }

  /** How many dialers it remembers tokens of. */
  get trackedPeers(): number {
    return this.#byPeer.size;
  }

  /**
   * `null` if `token` (already verified) is fresh, and then remembers it; otherwise a sentence
   * saying why it is refused. `now` is the server's wall clock; `stranger` says that the server
   * has no link to the dialer.
   */
  admit(token: UpgradeToken, now: number, stranger = false): string | null {
    if (Math.abs(now - token.time) > this.#windowMs) {
      return `Upgrade token is ${Math.round((now - token.time) / 1000)} s away from this ` +
        `peer's clock; at most ${this.#windowMs / 1000} s allowed`;
    }
    let peer = this.#byPeer.get(token.from);
    if (peer === undefined) {
      if (stranger && this.#byPeer.size >= this.#maxPeers) this.#forgetExpired(now);
      if (stranger && this.#byPeer.size >= this.#maxPeers) {
        return `Upgrade token comes from peer ${token.from}, unknown to this peer, while ` +
          `${this.#byPeer.size} peers have dialed within ${this.#windowMs / 1000} s`;
      }
      peer = { seen: new Map(), floor: -Infinity };
      this.#byPeer.set(token.from, peer);
    }
    if (token.time <= peer.floor || peer.seen.has(token.nonce)) {
      return "Upgrade token was used before";
    }
    for (const [nonce, time] of peer.seen) {
      if (time < now - this.#windowMs) peer.seen.delete(nonce);
    }
    if (peer.seen.size >= this.#capacityPerPeer) {
      let oldest: [string, number] | undefined;
      for (const entry of peer.seen) {
        if (oldest === undefined || entry[1] < oldest[1]) oldest = entry;
      }
      peer.seen.delete(oldest![0]);
      peer.floor = Math.max(peer.floor, oldest![1]);
    }
    peer.seen.set(token.nonce, token.time);
    return null;
  }

  /**
   * Forgets the dialers whose remembered tokens and floor are all outside the window: any token
   * they would refuse is refused by its time already.
   */
  #forgetExpired(now: number): void {
    const expired = now - this.#windowMs;
    for (const [from, peer] of this.#byPeer) {
      if (peer.floor >= expired) continue;
      if ([...peer.seen.values()].every((time) => time < expired)) this.#byPeer.delete(from);
    }
  }
}

function upgradeBytes(
  from: number,
  to: number,
  time: number,
  nonce: string,
): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(`denoraft-ws-v1|upgrade|${from}|${to}|${time}|${nonce}`);
}

function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

function fromHex(text: string): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(text.length / 2);
  for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return bytes;
}
