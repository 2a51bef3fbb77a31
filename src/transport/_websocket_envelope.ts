/**
 * The wire format of the WebSocket transport: every frame is one JSON text in a versioned
 * envelope. Frames arrive as `unknown` and become a {@linkcode Frame} only through
 * {@linkcode parseFrame}, which checks the type, the size and every field.
 *
 * @module
 */

/** The envelope version this code speaks; a frame with another `v` is refused. */
export const ENVELOPE_VERSION = 1;

/** Longest RPC method name accepted, in characters: Raft's are short, so anything longer is junk. */
const MAX_METHOD_LENGTH = 64;

/**
 * Deepest nesting of arrays and objects in a frame: a Raft request nests its commands 4 levels
 * down (envelope, arguments, entries, entry), so commands of the default `maxCommandDepth` (64)
 * fit with room to spare. Checked on the text, before `JSON.parse` builds anything: 4 MiB of
 * `[` took `JSON.parse` half a second and 145 MB.
 */
export const MAX_FRAME_DEPTH = 128;

/** Length of a handshake nonce or proof, in characters of base64 text. */
const MAX_TOKEN_LENGTH = 128;

/** Longest address a dialer may advertise in its hello, in characters. */
export const MAX_ADVERTISED_ADDRESS_LENGTH = 1024;

/** The server's opening frame: a fresh nonce the dialer must sign. */
export interface ChallengeFrame {
  /** Envelope version. */
  v: typeof ENVELOPE_VERSION;
  /** Frame kind. */
  type: "challenge";
  /** Base64 of fresh random bytes. */
  nonce: string;
}

/**
 * The dialer's answer: who it is, whom it meant to reach, where it can be reached, and its proof
 * of the secret.
 */
export interface HelloFrame {
  /** Envelope version. */
  v: typeof ENVELOPE_VERSION;
  /** Frame kind. */
  type: "hello";
  /** The dialer's peer id. */
  from: number;
  /** The peer id the dialer believes it reached. */
  to: number;
  /** Base64 of the dialer's own fresh nonce, which the server must sign back. */
  nonce: string;
  /**
   * The URL of the dialer's own server, as other peers should dial it: a server with no link to
   * the dialer yet dials it back there. Printable ASCII without quotes or backslashes (a
   * serialized URL is), at most {@linkcode MAX_ADVERTISED_ADDRESS_LENGTH} characters; whether it
   * is a peer URL is for the transport to check.
   */
  address: string;
  /** Base64 HMAC over both nonces, both ids and the address. */
  proof: string;
}

/** The server's acceptance, proving in turn that it holds the secret. */
export interface WelcomeFrame {
  /** Envelope version. */
  v: typeof ENVELOPE_VERSION;
  /** Frame kind. */
  type: "welcome";
  /** Base64 HMAC over the hello's transcript, with the server's role label. */
  proof: string;
}

/** An RPC request. */
export interface RequestFrame {
  /** Envelope version. */
  v: typeof ENVELOPE_VERSION;
  /** Frame kind. */
  type: "request";
  /** Caller-chosen id, echoed by the reply; unique among the caller's requests in flight. */
  id: number;
  /** The RPC method, e.g. `"RequestVote"`. */
  method: string;
  /** The RPC arguments: any JSON value, still unchecked (the handler validates it). */
  args: unknown;
}

/** The reply to a {@linkcode RequestFrame}. */
export interface ReplyFrame {
  /** Envelope version. */
  v: typeof ENVELOPE_VERSION;
  /** Frame kind. */
  type: "reply";
  /** The id of the request answered. */
  id: number;
  /** The handler's result: any JSON value, still unchecked (the caller validates it). */
  result: unknown;
}

/**
 * Sent by the accepting side on a connection it has not written on for a while, so that the
 * dialing side, which only reads, can tell a quiet peer from a vanished one.
 */
export interface KeepaliveFrame {
  /** Envelope version. */
  v: typeof ENVELOPE_VERSION;
  /** Frame kind. */
  type: "keepalive";
}

/** Any frame of the protocol. */
export type Frame =
  | ChallengeFrame
  | HelloFrame
  | WelcomeFrame
  | RequestFrame
  | ReplyFrame
  | KeepaliveFrame;

/** Why {@linkcode parseFrame} refused a frame; the text goes to the log. */
export interface FrameRefusal {
  /** A sentence naming what was wrong. */
  refused: string;
}

/**
 * Checks one received WebSocket message: it must be text, at most `maxBytes` bytes of UTF-8, JSON,
 * and a well-formed envelope of this version.
 */
export function parseFrame(data: unknown, maxBytes: number): Frame | FrameRefusal {
  if (typeof data !== "string") {
    return { refused: "Frame is binary, expected a text frame" };
  }
  // A UTF-16 code unit is at most 3 bytes of UTF-8, so most frames skip the exact count.
  if (data.length * 3 > maxBytes) {
    const bytes = new TextEncoder().encode(data).length;
    if (bytes > maxBytes) {
      return { refused: `Frame is ${bytes} bytes, over the limit of ${maxBytes}` };
    }
  }
  if (isNestedDeeperThan(data, MAX_FRAME_DEPTH)) {
    return { refused: `Frame nests arrays and objects more than ${MAX_FRAME_DEPTH} levels deep` };
  }
  let value: unknown;
  try {
    value = JSON.parse(data);
  } catch {
    return { refused: `Frame is not JSON: ${JSON.stringify(data.slice(0, 40))}` };
  }
  if (!isRecord(value)) return { refused: "Frame is not a JSON object" };
  if (value.v !== ENVELOPE_VERSION) {
    return { refused: `Frame has envelope version ${show(value.v)}, expected ${ENVELOPE_VERSION}` };
  }
  switch (value.type) {
    case "challenge":
      if (!isToken(value.nonce)) return { refused: "Challenge has no valid nonce" };
      return { v: ENVELOPE_VERSION, type: "challenge", nonce: value.nonce };
    case "hello":
      if (!isPeerId(value.from) || !isPeerId(value.to)) {
        return { refused: `Hello has invalid peer ids ${show(value.from)}, ${show(value.to)}` };
      }
      if (!isToken(value.nonce) || !isToken(value.proof)) {
        return { refused: "Hello has no valid nonce or proof" };
      }
      if (!isAdvertisedAddress(value.address)) {
        return { refused: `Hello has invalid address ${show(value.address)}` };
      }
      return {
        v: ENVELOPE_VERSION,
        type: "hello",
        from: value.from,
        to: value.to,
        nonce: value.nonce,
        address: value.address,
        proof: value.proof,
      };
    case "welcome":
      if (!isToken(value.proof)) return { refused: "Welcome has no valid proof" };
      return { v: ENVELOPE_VERSION, type: "welcome", proof: value.proof };
    case "request":
      if (!isRequestId(value.id)) return { refused: `Request has invalid id ${show(value.id)}` };
      if (
        typeof value.method !== "string" || value.method.length === 0 ||
        value.method.length > MAX_METHOD_LENGTH
      ) {
        return { refused: `Request has invalid method ${show(value.method)}` };
      }
      if (!("args" in value)) return { refused: "Request has no args" };
      return {
        v: ENVELOPE_VERSION,
        type: "request",
        id: value.id,
        method: value.method,
        args: value.args,
      };
    case "reply":
      if (!isRequestId(value.id)) return { refused: `Reply has invalid id ${show(value.id)}` };
      if (!("result" in value)) return { refused: "Reply has no result" };
      return { v: ENVELOPE_VERSION, type: "reply", id: value.id, result: value.result };
    case "keepalive":
      if (Object.keys(value).length !== 2) return { refused: "Keepalive has extra fields" };
      return { v: ENVELOPE_VERSION, type: "keepalive" };
    default:
      return { refused: `Frame has unknown type ${show(value.type)}` };
  }
}

/** Whether `parsed` is a refusal rather than a frame. */
export function isRefusal(parsed: Frame | FrameRefusal): parsed is FrameRefusal {
  return "refused" in parsed;
}

/** The JSON text of `frame`. */
export function encodeFrame(frame: Frame): string {
  return JSON.stringify(frame);
}

/**
 * Whether the JSON text `text` opens more than `maxDepth` arrays and objects at once. Skips string
 * contents with `indexOf` rather than byte by byte, so it costs a fraction of `JSON.parse` on
 * frames of long strings, and stops at the first level past the limit. On text that is not JSON
 * it still bounds the nesting `JSON.parse` would reach before failing.
 */
function isNestedDeeperThan(text: string, maxDepth: number): boolean {
  let depth = 0;
  let i = 0;
  while (i < text.length) {
    const unit = text.charCodeAt(i++);
    if (unit === 0x22) {
      // Skip to the closing quote: one not preceded by an odd number of backslashes.
      for (;;) {
        const quote = text.indexOf('"', i);
        if (quote < 0) return false;
        let backslashes = 0;
        while (text.charCodeAt(quote - 1 - backslashes) === 0x5c) backslashes++;
        i = quote + 1;
        if (backslashes % 2 === 0) break;
      }
    } else if (unit === 0x5b || unit === 0x7b) {
      if (++depth > maxDepth) return true;
    } else if (unit === 0x5d || unit === 0x7d) {
      depth--;
    }
  }
  return false;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isPeerId(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

/** Whether `value` may be advertised as a dialer's address (see {@linkcode HelloFrame}). */
export function isAdvertisedAddress(value: unknown): value is string {
  // Printable ASCII but `"` and `\`, which JSON would escape: the frame stays under 2 KiB.
  return typeof value === "string" && value.length > 0 &&
    value.length <= MAX_ADVERTISED_ADDRESS_LENGTH && /^[\x21\x23-\x5b\x5d-\x7e]+$/.test(value);
}

function isRequestId(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

function isToken(value: unknown): value is string {
  return typeof value === "string" && value.length > 0 && value.length <= MAX_TOKEN_LENGTH &&
    /^[A-Za-z0-9+/=]+$/.test(value);
}

function show(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 40 ? `${text.slice(0, 40)}...` : text;
}
