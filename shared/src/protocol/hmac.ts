/**
 * @module protocol/hmac
 * Edge → gpu-worker request signing with a shared secret (design README §2: the pool is never
 * open). The edge adds `x-nest-timestamp` (Unix seconds) and `x-nest-signature` (hex
 * HMAC-SHA256 of `"<timestamp>\n<METHOD>\n<path+query>\n<body>"`); the worker recomputes it and
 * refuses requests whose signature differs or whose timestamp is more than
 * {@link MAX_SKEW_S} seconds away from its clock. Worker-safe (WebCrypto only).
 */

/** Header carrying the signing time, Unix seconds. */
export const TIMESTAMP_HEADER = "x-nest-timestamp";
/** Header carrying the hex HMAC-SHA256 signature (64 lowercase hex chars). */
export const SIGNATURE_HEADER = "x-nest-signature";
/** Largest accepted clock difference between signer and verifier, in seconds. */
export const MAX_SKEW_S = 300;

const keys = new Map<string, ReturnType<typeof crypto.subtle.importKey>>();

function hmacKey(secret: string): ReturnType<typeof crypto.subtle.importKey> {
  let key = keys.get(secret);
  if (!key) {
    key = crypto.subtle.importKey("raw", new TextEncoder().encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    keys.set(secret, key);
  }
  return key;
}

/** The string that is signed: `"<timestamp>\n<METHOD>\n<path+query>\n<body>"`. */
export function signingString(timestampS: number, method: string, pathAndQuery: string, body: string): string {
  return `${timestampS}\n${method.toUpperCase()}\n${pathAndQuery}\n${body}`;
}

/** Hex HMAC-SHA256 of {@link signingString} under `secret`. */
export async function signRequest(secret: string, timestampS: number, method: string, pathAndQuery: string, body: string): Promise<string> {
  const mac = await crypto.subtle.sign("HMAC", await hmacKey(secret), new TextEncoder().encode(signingString(timestampS, method, pathAndQuery, body)));
  return Array.from(new Uint8Array(mac), (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Checks a signed request. Returns `undefined` when valid, otherwise the reason (for a 401 message).
 * @param nowS the verifier's clock, Unix seconds.
 */
export async function verifyRequest(
  secret: string,
  headers: { timestamp: string | undefined; signature: string | undefined },
  method: string,
  pathAndQuery: string,
  body: string,
  nowS: number = Math.floor(Date.now() / 1000),
): Promise<string | undefined> {
  if (!headers.timestamp || !headers.signature) return `missing ${TIMESTAMP_HEADER} or ${SIGNATURE_HEADER}`;
  const ts = Number(headers.timestamp);
  if (!Number.isInteger(ts)) return `${TIMESTAMP_HEADER} is not an integer`;
  if (Math.abs(nowS - ts) > MAX_SKEW_S) return `${TIMESTAMP_HEADER} is more than ${MAX_SKEW_S} s off`;
  const expected = await signRequest(secret, ts, method, pathAndQuery, body);
  const got = headers.signature.toLowerCase();
  if (got.length !== expected.length) return "bad signature";
  let diff = 0;
  for (let i = 0; i < got.length; i++) diff |= got.charCodeAt(i) ^ expected.charCodeAt(i);
  return diff === 0 ? undefined : "bad signature";
}
