/**
 * @module middleware/auth
 * Key hashing for the edge: it stores only hex SHA-256 hashes of API keys (`middleware/keys.ts`
 * checks a presented key against them). Worker-safe (uses the global `crypto.subtle`).
 */

/** Hex SHA-256 of a UTF-8 string (64 lowercase hex chars). */
export async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}
