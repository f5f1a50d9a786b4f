/**
 * @module middleware/auth
 * Bearer-key authentication for the edge. The edge stores only hex SHA-256 hashes of the accepted
 * API keys; a presented key is hashed with WebCrypto and compared to them. Keys are never logged.
 * Worker-safe (uses the global `crypto.subtle`).
 */
import { bearerAuth } from "hono/bearer-auth";
import type { MiddlewareHandler } from "hono";
import { NestError } from "@nest/shared/protocol/errors";

/** Hex SHA-256 of a UTF-8 string (64 lowercase hex chars). */
export async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Compares two strings in time independent of where they first differ. */
function constantTimeEqual(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

function unauthorized(message: string): Response {
  return Response.json(new NestError("unauthorized", message).toBody(), { status: 401 });
}

/**
 * Middleware accepting `Authorization: Bearer <key>` when SHA-256(key) is one of `apiKeyHashes`.
 * A missing, malformed or unknown key answers 401 `{error:{code:"unauthorized",message}}`.
 * @param apiKeyHashes hex SHA-256 hashes (case-insensitive) of the accepted keys; empty = nobody.
 */
export function apiKeyAuth(apiKeyHashes: readonly string[]): MiddlewareHandler {
  const accepted = apiKeyHashes.map((h) => h.trim().toLowerCase()).filter((h) => h.length > 0);
  return bearerAuth({
    verifyToken: async (token) => {
      const hash = await sha256Hex(token);
      let ok = false;
      for (const h of accepted) ok = constantTimeEqual(h, hash) || ok;
      return ok;
    },
    noAuthenticationHeader: {
      message: () => unauthorized("missing API key: send `Authorization: Bearer <key>`"),
    },
    invalidAuthenticationHeader: {
      message: () => unauthorized("malformed Authorization header: expected `Bearer <key>`"),
    },
    invalidToken: { message: () => unauthorized("invalid API key") },
  });
}
