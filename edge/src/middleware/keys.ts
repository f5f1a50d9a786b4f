/**
 * @module middleware/keys
 * API-key authentication, scopes, per-minute rate limits and per-day token quotas (issue 5).
 * A presented bearer key is hashed (SHA-256) and looked up among the static hashes (full access,
 * no limits: the key `nestlm serve` generates) and then in the key store. Order of refusals:
 * 401 (no or unknown key) → 403 (scope) → 429 + `Retry-After` (minute limit, then day quota).
 * Keys are never logged; only the record's name is kept on the context. Worker-safe.
 */
import type { Context, MiddlewareHandler } from "hono";
import type { EdgeEnv } from "../env.ts";
import { NestError } from "@nest/shared/protocol/errors";
import { sha256Hex } from "./auth.ts";
import { ALL_SCOPES, getKeyRecord, type KeyRecord, type Scope } from "../keys/keys.ts";
import type { KvStore } from "../store/kv.ts";

/** A request-per-minute limiter (Workers: the Rate Limiting binding; else KV counters). */
export interface RateLimiter {
  /** Counts one request of `id` against `rpm` per minute; `ok: false` with the wait in seconds when over. */
  hit(id: string, rpm: number, nowMs: number): Promise<{ ok: boolean; retryAfterS: number }>;
}

/** A fixed-window (UTC minute) limiter over a {@link KvStore} counter `rl:<id>:<minute>`. */
export function kvRateLimiter(kv: KvStore): RateLimiter {
  return {
    async hit(id, rpm, nowMs) {
      const minute = Math.floor(nowMs / 60_000);
      const n = await kv.incr(`rl:${id}:${minute}`, 1, 120);
      const retryAfterS = Math.max(1, Math.ceil(((minute + 1) * 60_000 - nowMs) / 1000));
      return { ok: n <= rpm, retryAfterS };
    },
  };
}

export interface KeyAuthDeps {
  /** Hex SHA-256 hashes of keys with every scope and no limits. */
  staticHashes: readonly string[];
  /** Key records (`key:<hash>`) and token counters (`tok:<hash>:<day>`); absent = static keys only. */
  keys?: KvStore;
  /** Minute limiter; default {@link kvRateLimiter} over `keys`. */
  limiter?: RateLimiter;
  /** Clock in ms. */
  now?: () => number;
}

/** What the middleware leaves on the context (`c.get("apiKey")`). */
export interface AuthedKey {
  record: KeyRecord;
  /** Adds generated tokens to today's quota use (call after the answer, prompt + completion). */
  chargeTokens(tokens: number): Promise<void>;
}

function unauthorized(message: string): NestError {
  return new NestError("unauthorized", message);
}

/** The UTC day number of `ms` and the seconds left in it. */
function utcDay(ms: number): { day: number; leftS: number } {
  const day = Math.floor(ms / 86_400_000);
  return { day, leftS: Math.max(1, Math.ceil(((day + 1) * 86_400_000 - ms) / 1000)) };
}

/**
 * Middleware requiring a key with `scope`.
 * @throws (per request) NestError `missing_api_key` (401, no `Authorization` header) or
 *   `unauthorized` (401, malformed or unknown key; both with `WWW-Authenticate: Bearer`), `forbidden`
 *   (403) naming the missing scope, `rate_limited` (429, `retryAfterS` = seconds to the next minute
 *   or to UTC midnight).
 */
export function keyAuth(deps: KeyAuthDeps, scope: Scope): MiddlewareHandler<EdgeEnv> {
  const statics = new Set(deps.staticHashes.map((h) => h.trim().toLowerCase()).filter(Boolean));
  const now = deps.now ?? Date.now;
  const limiter = deps.limiter ?? (deps.keys ? kvRateLimiter(deps.keys) : undefined);
  return async (c: Context<EdgeEnv>, next) => {
    const header = c.req.header("authorization");
    if (!header) throw new NestError("missing_api_key", "missing API key: send `Authorization: Bearer <key>`");
    const m = /^Bearer +([\x21-\x7e]+) *$/i.exec(header);
    if (!m) throw unauthorized("malformed Authorization header: expected `Bearer <key>`");
    const hash = await sha256Hex(m[1]!);
    let record: KeyRecord | undefined;
    if (statics.has(hash)) {
      record = { hash, name: "static", scopes: [...ALL_SCOPES], rpm: 0, tokens_per_day: 0, created_at: "" };
    } else if (deps.keys) {
      record = await getKeyRecord(deps.keys, hash);
    }
    if (!record) throw unauthorized("invalid API key");
    if (!record.scopes.includes(scope)) {
      throw new NestError("forbidden", `API key \`${record.name}\` lacks scope \`${scope}\``);
    }
    const t = now();
    if (record.rpm > 0 && limiter) {
      const r = await limiter.hit(hash, record.rpm, t);
      if (!r.ok) {
        throw new NestError("rate_limited", `rate limit of ${record.rpm} requests per minute exceeded`, { retryAfterS: r.retryAfterS });
      }
    }
    const { day, leftS } = utcDay(t);
    const tokKey = `tok:${hash}:${day}`;
    if (record.tokens_per_day > 0 && deps.keys) {
      const used = Number((await deps.keys.get(tokKey)) ?? 0);
      if (used >= record.tokens_per_day) {
        throw new NestError("rate_limited", `daily token quota of ${record.tokens_per_day} tokens used up`, { retryAfterS: leftS });
      }
    }
    const keys = deps.keys;
    const authed: AuthedKey = {
      record,
      chargeTokens: async (tokens) => {
        if (keys && record.tokens_per_day > 0 && tokens > 0) await keys.incr(tokKey, tokens, 2 * 86_400);
      },
    };
    c.set("apiKey", authed);
    await next();
  };
}

/** The key the middleware accepted (undefined on routes without it). */
export function authedKey(c: Context<EdgeEnv>): AuthedKey | undefined {
  return c.get("apiKey");
}
