/**
 * @module protocol/hmac
 * Edge → gpu-worker request signing with a shared secret (design README §2: the pool is never
 * open). The edge adds `x-nest-timestamp` (Unix seconds), `x-nest-nonce` (32 random hex digits) and
 * `x-nest-signature` (hex HMAC-SHA256 of `"<timestamp>.<nonce>\n<METHOD>\n<path+query>\n<body>"`);
 * the worker checks the headers' shape and the timestamp **before reading the body** (at most
 * {@link MAX_SKEW_S} seconds away from its clock), then the signature, then that it has not seen the
 * signature before ({@link ReplayGuard}: a captured request cannot be replayed inside the validity
 * window). Worker-safe (WebCrypto only).
 */

/** Header carrying the signing time, Unix seconds. */
export const TIMESTAMP_HEADER = "x-nest-timestamp";
/** Header carrying a fresh random nonce per request (16–64 lowercase hex digits). */
export const NONCE_HEADER = "x-nest-nonce";
/** Header carrying the hex HMAC-SHA256 signature (64 lowercase hex chars). */
export const SIGNATURE_HEADER = "x-nest-signature";
/** Largest accepted clock difference between signer and verifier, in seconds. */
export const MAX_SKEW_S = 300;

const NONCE = /^[0-9a-f]{16,64}$/;
const SIGNATURE = /^[0-9a-fA-F]{64}$/;

const keys = new Map<string, ReturnType<typeof crypto.subtle.importKey>>();

function hmacKey(secret: string): ReturnType<typeof crypto.subtle.importKey> {
  let key = keys.get(secret);
  if (!key) {
    key = crypto.subtle.importKey("raw", new TextEncoder().encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    keys.set(secret, key);
  }
  return key;
}

/**
 * The string that is signed: `"<timestamp>.<nonce>\n<METHOD>\n<path+query>\n<body>"`
 * (`"<timestamp>\n…"` without a nonce; the gpu-worker's `requireSignature` requires one).
 */
export function signingString(timestampS: number, method: string, pathAndQuery: string, body: string, nonce?: string): string {
  return `${timestampS}${nonce ? `.${nonce}` : ""}\n${method.toUpperCase()}\n${pathAndQuery}\n${body}`;
}

/** Hex HMAC-SHA256 of {@link signingString} under `secret`. */
export async function signRequest(
  secret: string,
  timestampS: number,
  method: string,
  pathAndQuery: string,
  body: string,
  nonce?: string,
): Promise<string> {
  const mac = await crypto.subtle.sign(
    "HMAC",
    await hmacKey(secret),
    new TextEncoder().encode(signingString(timestampS, method, pathAndQuery, body, nonce)),
  );
  return Array.from(new Uint8Array(mac), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A fresh nonce: 32 random lowercase hex digits. */
export function newNonce(): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The signature headers of a request, as received. */
export interface SignatureHeaders {
  timestamp: string | undefined;
  signature: string | undefined;
  nonce?: string | undefined;
}

/**
 * Checks what can be checked without the body: both headers present, the timestamp an integer
 * within {@link MAX_SKEW_S} of `nowS`, the signature 64 hex digits, the nonce (when `requireNonce`)
 * 16–64 hex digits. Returns `undefined` when plausible, otherwise the reason (for a 401 message).
 */
export function checkSignatureHeaders(
  headers: SignatureHeaders,
  nowS: number = Math.floor(Date.now() / 1000),
  requireNonce = false,
): string | undefined {
  if (!headers.timestamp || !headers.signature) return `missing ${TIMESTAMP_HEADER} or ${SIGNATURE_HEADER}`;
  const ts = Number(headers.timestamp);
  if (!Number.isInteger(ts)) return `${TIMESTAMP_HEADER} is not an integer`;
  if (Math.abs(nowS - ts) > MAX_SKEW_S) return `${TIMESTAMP_HEADER} is more than ${MAX_SKEW_S} s off`;
  if (!SIGNATURE.test(headers.signature)) return "bad signature";
  if (headers.nonce !== undefined ? !NONCE.test(headers.nonce) : requireNonce) return `missing or malformed ${NONCE_HEADER}`;
  return undefined;
}

/**
 * Checks a signed request. Returns `undefined` when valid, otherwise the reason (for a 401 message).
 * @param nowS the verifier's clock, Unix seconds.
 */
export async function verifyRequest(
  secret: string,
  headers: SignatureHeaders,
  method: string,
  pathAndQuery: string,
  body: string,
  nowS: number = Math.floor(Date.now() / 1000),
): Promise<string | undefined> {
  const why = checkSignatureHeaders(headers, nowS);
  if (why) return why;
  const expected = await signRequest(secret, Number(headers.timestamp), method, pathAndQuery, body, headers.nonce);
  const got = headers.signature!.toLowerCase();
  let diff = 0;
  for (let i = 0; i < got.length; i++) diff |= got.charCodeAt(i) ^ expected.charCodeAt(i);
  return diff === 0 ? undefined : "bad signature";
}

/**
 * Signatures already accepted, each kept until its timestamp leaves the validity window (after
 * which the timestamp check refuses it anyway), so a replay inside the window is refused. Memory
 * is bounded: at most `maxEntries` signatures (the oldest are forgotten first; at 100,000 entries
 * that is > 300 requests/s sustained over the whole 5-minute window).
 */
export class ReplayGuard {
  /** signature → expiry (Unix s), in insertion order. */
  private readonly seen = new Map<string, number>();

  constructor(private readonly maxEntries = 100_000) {}

  /** Records `signature` (timestamp `timestampS`); `true` when it was already recorded (a replay). */
  check(signature: string, timestampS: number, nowS: number = Math.floor(Date.now() / 1000)): boolean {
    for (const [sig, expiresS] of this.seen) {
      if (expiresS >= nowS && this.seen.size < this.maxEntries) break;
      this.seen.delete(sig);
    }
    const key = signature.toLowerCase();
    if (this.seen.has(key)) return true;
    this.seen.set(key, timestampS + MAX_SKEW_S + 1);
    return false;
  }

  /** Signatures held now. */
  get size(): number {
    return this.seen.size;
  }
}
