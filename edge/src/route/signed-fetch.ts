/**
 * @module route/signed-fetch
 * A `fetch` that signs every edge → gpu-worker request with the pool's shared secret
 * (shared/src/protocol/hmac.ts), for the decode, retrieve and job-API calls alike. Worker-safe.
 */
import { NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, newNonce, signRequest } from "@nest/shared/protocol/hmac";

function bodyText(body: RequestInit["body"]): string {
  if (body === undefined || body === null) return "";
  if (typeof body === "string") return body;
  if (body instanceof ArrayBuffer) return new TextDecoder().decode(body);
  if (ArrayBuffer.isView(body)) return new TextDecoder().decode(body as Uint8Array);
  throw new Error("signedFetch: only string, ArrayBuffer or typed-array bodies can be signed");
}

/**
 * Wraps `base` so each call carries `x-nest-timestamp`, a fresh `x-nest-nonce` and `x-nest-signature`.
 * @param secret the shared secret; `undefined` or empty returns `base` unchanged (an open pool,
 *   for tests only).
 * @throws (per call) Error for a body that is a stream or form data (cannot be signed).
 */
export function signedFetch(secret: string | undefined, base: typeof fetch = (i, init) => fetch(i, init)): typeof fetch {
  if (!secret) return base;
  return (async (input: Parameters<typeof fetch>[0], init: RequestInit = {}) => {
    const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url);
    const method = init.method ?? (input instanceof Request ? input.method : "GET");
    const ts = Math.floor(Date.now() / 1000);
    const nonce = newNonce();
    const sig = await signRequest(secret, ts, method, url.pathname + url.search, bodyText(init.body), nonce);
    const headers = new Headers(init.headers ?? (input instanceof Request ? input.headers : undefined));
    headers.set(TIMESTAMP_HEADER, String(ts));
    headers.set(NONCE_HEADER, nonce);
    headers.set(SIGNATURE_HEADER, sig);
    return base(input, { ...init, headers });
  }) as typeof fetch;
}
