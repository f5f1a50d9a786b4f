/**
 * @module adapters/node/json-file-kv
 * A {@link KvStore} kept in one JSON file (`$NEST_HOME/keys.json`, mode 0600): the embedded
 * default store of API key records, shared by `nestlm keys` and `nestlm serve`. Values without a
 * TTL are persisted (re-read when the file changes); counters and TTL'd values (rate limits, token
 * use) stay in this process's memory.
 */
import { mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { z } from "zod";
import { memoryKv, type KvStore } from "../../store/kv.ts";

/** The file: `{ "<key>": "<value>" }` (key records are JSON strings, see `keys/keys`). */
const KeysFileSchema = z.record(z.string(), z.string());

/** Opens (lazily creates) the file store at `file`. */
export function jsonFileKv(file: string): KvStore {
  const volatile = memoryKv();
  let cache: Record<string, string> = {};
  let mtime = -1;
  const load = (): Record<string, string> => {
    let m: number;
    try {
      m = statSync(file).mtimeMs;
    } catch {
      cache = {};
      mtime = -1;
      return cache;
    }
    if (m !== mtime) {
      cache = KeysFileSchema.parse(JSON.parse(readFileSync(file, "utf8")));
      mtime = m;
    }
    return cache;
  };
  const save = (data: Record<string, string>) => {
    mkdirSync(dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(data, null, 2)}\n`, { mode: 0o600 });
    renameSync(tmp, file);
    mtime = -1;
  };
  return {
    async get(key) {
      return Object.hasOwn(load(), key) ? load()[key]! : volatile.get(key);
    },
    async put(key, value, ttlS) {
      if (ttlS !== undefined) return volatile.put(key, value, ttlS);
      save({ ...load(), [key]: value });
    },
    async delete(key) {
      const data = { ...load() };
      if (Object.hasOwn(data, key)) {
        delete data[key];
        save(data);
      }
      await volatile.delete(key);
    },
    incr: (key, by, ttlS) => volatile.incr(key, by, ttlS),
    async list(prefix) {
      return [...Object.keys(load()).filter((k) => k.startsWith(prefix)), ...(await volatile.list(prefix))];
    },
  };
}
