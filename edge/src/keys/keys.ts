/**
 * @module keys/keys
 * API key records (issue 5): a key is stored only as its hex SHA-256 hash, with a name, scopes
 * (`generate`, `batch`, `admin`), a per-minute request limit and a per-day token quota. Records
 * live in a {@link KvStore} under `key:<hash>` (a JSON file or Redis locally, Workers KV in
 * production). Worker-safe.
 */
import { z } from "zod";
import type { KvStore } from "../store/kv.ts";

export const ScopeSchema = z.enum(["generate", "batch", "admin"]);
export type Scope = z.infer<typeof ScopeSchema>;
export const ALL_SCOPES: readonly Scope[] = ScopeSchema.options;

export const KeyRecordSchema = z.object({
  /** Hex SHA-256 of the key (64 lowercase hex chars). */
  hash: z.string().regex(/^[0-9a-f]{64}$/),
  /** Human label, e.g. `ci` or `alice`. */
  name: z.string().min(1).max(64),
  scopes: z.array(ScopeSchema).min(1),
  /** Requests per minute; 0 = unlimited. */
  rpm: z.number().int().nonnegative(),
  /** Tokens (prompt + completion) per UTC day; 0 = unlimited. */
  tokens_per_day: z.number().int().nonnegative(),
  /** ISO 8601 creation time. */
  created_at: z.string(),
});
export type KeyRecord = z.infer<typeof KeyRecordSchema>;

/** Defaults of a new key: 60 requests per minute, 200 000 tokens per day. */
export const DEFAULT_LIMITS = { rpm: 60, tokens_per_day: 200_000 } as const;

/** The KV key of a record. */
export function recordKey(hash: string): string {
  return `key:${hash}`;
}

/** Looks a key record up; malformed records count as absent. */
export async function getKeyRecord(kv: KvStore, hash: string): Promise<KeyRecord | undefined> {
  const raw = await kv.get(recordKey(hash));
  if (raw === null) return undefined;
  const parsed = KeyRecordSchema.safeParse(JSON.parse(raw));
  return parsed.success ? parsed.data : undefined;
}

/** Stores (or replaces) a record. */
export async function putKeyRecord(kv: KvStore, record: KeyRecord): Promise<void> {
  await kv.put(recordKey(record.hash), JSON.stringify(KeyRecordSchema.parse(record)));
}

/** Every stored record, sorted by name. */
export async function listKeyRecords(kv: KvStore): Promise<KeyRecord[]> {
  const out: KeyRecord[] = [];
  for (const k of await kv.list("key:")) {
    const rec = await getKeyRecord(kv, k.slice(4));
    if (rec) out.push(rec);
  }
  return out.sort((a, b) => a.name.localeCompare(b.name));
}
