/**
 * @module keys
 * `nestlm keys create|list|revoke`: API key records in `$NEST_HOME/keys.json` (the embedded
 * edge's key store; `nestlm serve` reads it live). The key itself is printed once by `create` and
 * stored only as its SHA-256 hash.
 */
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { type Command, InvalidArgumentError } from "commander";
import { jsonFileKv } from "@nest/edge/adapters/node/json-file-kv";
import {
  ALL_SCOPES,
  DEFAULT_LIMITS,
  ScopeSchema,
  listKeyRecords,
  putKeyRecord,
  recordKey,
  type KeyRecord,
  type Scope,
} from "@nest/edge/keys/keys";
import { nestHome } from "@nest/corpus/home";
import { hashApiKey } from "./api-key.ts";

/** The key file of `home`. */
export function keysFile(home: string): string {
  return join(home, "keys.json");
}

/**
 * Creates a key: returns the secret key (`nest_` + 43 base64url chars) and its record.
 * @throws Error for an empty name or one already used.
 */
export async function createKey(home: string, opts: { name: string; scopes: Scope[]; rpm: number; tokensPerDay: number }) {
  const kv = jsonFileKv(keysFile(home));
  if ((await listKeyRecords(kv)).some((r) => r.name === opts.name)) throw new Error(`a key named \`${opts.name}\` exists`);
  const key = `nest_${randomBytes(32).toString("base64url")}`;
  const record: KeyRecord = {
    hash: hashApiKey(key),
    name: opts.name,
    scopes: opts.scopes,
    rpm: opts.rpm,
    tokens_per_day: opts.tokensPerDay,
    created_at: new Date().toISOString(),
  };
  await putKeyRecord(kv, record);
  return { key, record };
}

/** Revokes the key named `name`. @returns whether one was removed. */
export async function revokeKey(home: string, name: string): Promise<boolean> {
  const kv = jsonFileKv(keysFile(home));
  const rec = (await listKeyRecords(kv)).find((r) => r.name === name);
  if (!rec) return false;
  await kv.delete(recordKey(rec.hash));
  return true;
}

function int(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError("expected a non-negative integer");
  return n;
}
function scopes(v: string): Scope[] {
  const out = v.split(",").map((s) => s.trim());
  for (const s of out)
    if (!ScopeSchema.safeParse(s).success) throw new InvalidArgumentError(`unknown scope \`${s}\` (${ALL_SCOPES.join(", ")})`);
  return out as Scope[];
}

/** Adds `keys create|list|revoke` to the program. */
export function addKeysCommands(program: Command): void {
  const keys = program.command("keys").description("manage API keys (stored as SHA-256 hashes in $NEST_HOME/keys.json)");
  keys
    .command("create <name>")
    .description("create a key and print it once")
    .option("--scopes <list>", `comma-separated scopes (${ALL_SCOPES.join(",")})`, scopes, ["generate"] as Scope[])
    .option("--rpm <n>", "requests per minute (0 = unlimited)", int, DEFAULT_LIMITS.rpm)
    .option("--tokens-per-day <n>", "tokens per UTC day (0 = unlimited)", int, DEFAULT_LIMITS.tokens_per_day)
    .action(async (name: string, o: { scopes: Scope[]; rpm: number; tokensPerDay: number }) => {
      const { key, record } = await createKey(nestHome(), { name, ...o });
      process.stderr.write(
        `created \`${record.name}\` (scopes ${record.scopes.join(",")}, ${record.rpm}/min, ${record.tokens_per_day} tokens/day); the key is shown only now:\n`,
      );
      console.log(key);
    });
  keys
    .command("list")
    .description("list keys (names, scopes, limits; never the keys)")
    .action(async () => {
      for (const r of await listKeyRecords(jsonFileKv(keysFile(nestHome())))) {
        console.log(
          `${r.name}\t${r.scopes.join(",")}\t${r.rpm}/min\t${r.tokens_per_day} tokens/day\t${r.created_at}\tsha256:${r.hash.slice(0, 12)}`,
        );
      }
    });
  keys
    .command("revoke <name>")
    .description("delete a key")
    .action(async (name: string) => {
      if (!(await revokeKey(nestHome(), name))) throw new Error(`no key named \`${name}\``);
      process.stderr.write(`revoked \`${name}\`\n`);
    });
}
