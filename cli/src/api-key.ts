/**
 * @module api-key
 * The local API key of `nestlm serve` / `nestlm ask`: `NEST_API_KEY` from the environment, else a
 * random key generated once and kept in `$NEST_HOME/api-key` (mode 0600). The edge only ever sees
 * its SHA-256 hash.
 */
import { randomBytes, createHash } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { cachePaths } from "@nest/corpus/home";
import type { CliEnv } from "@nest/shared/config/node-env";

export interface ApiKey {
  key: string;
  /** Where it came from: the environment variable or the key file. */
  origin: "env" | "file";
  /** The key file (whether or not it was used). */
  file: string;
}

/** Hex SHA-256 of `key` (what the edge's `apiKeyHashes` holds). */
export function hashApiKey(key: string): string {
  return createHash("sha256").update(key, "utf8").digest("hex");
}

/** Reads the key file, or `undefined` when it does not exist or is empty. */
export function readApiKeyFile(file: string): string | undefined {
  try {
    return readFileSync(file, "utf8").trim() || undefined;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

/**
 * The key a client should send: `NEST_API_KEY`, else the key file's content, else `undefined`.
 * @param env the `cli` slice of `nodeEnv(process.env)` (`@nest/shared/config/node-env`)
 */
export function findApiKey(home: string, env: CliEnv): ApiKey | undefined {
  const file = cachePaths(home).apiKeyFile;
  if (env.NEST_API_KEY) return { key: env.NEST_API_KEY, origin: "env", file };
  const key = readApiKeyFile(file);
  return key ? { key, origin: "file", file } : undefined;
}

/**
 * The server's key: like {@link findApiKey}, but creates the key file (32 random bytes, base64url,
 * mode 0600) when there is neither an environment key nor a file.
 * @throws filesystem errors other than a missing file.
 */
export function loadOrCreateApiKey(home: string, env: CliEnv): ApiKey {
  const found = findApiKey(home, env);
  if (found) return found;
  const file = cachePaths(home).apiKeyFile;
  mkdirSync(dirname(file), { recursive: true });
  const key = `nest_${randomBytes(32).toString("base64url")}`;
  try {
    writeFileSync(file, `${key}\n`, { mode: 0o600, flag: "wx" });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    return { key: readApiKeyFile(file) ?? key, origin: "file", file }; // written concurrently
  }
  return { key, origin: "file", file };
}
