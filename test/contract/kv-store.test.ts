/**
 * Runs the KvStore contract (`kv-store.case.ts`) on the Node implementations: memory (test clock),
 * the JSON file of `nestlm keys` (a temporary file; its TTL'd values and counters live in memory,
 * real clock) and Redis on 127.0.0.1:6379 (a random key prefix, removed afterwards; real clock).
 * Workers KV runs the same suite inside workerd (`test/workerd/kv-store.test.ts`).
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { memoryKv } from "@nest/edge/store/kv";
import { jsonFileKv } from "@nest/edge/adapters/node/json-file-kv";
import { redisKv } from "@nest/edge/adapters/node/redis-kv";
import { kvStoreContract } from "./kv-store.case.ts";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

kvStoreContract("memory", async () => {
  let now = 1_000_000;
  return { kv: memoryKv(() => now), elapse: async (ms) => void (now += ms) };
});

kvStoreContract("JSON file", async () => {
  const dir = await mkdtemp(join(tmpdir(), "nest-kv-"));
  return { kv: jsonFileKv(join(dir, "keys.json")), elapse: sleep, close: () => rm(dir, { recursive: true, force: true }) };
});

kvStoreContract("Redis", async () => {
  const prefix = `nest-contract-${randomBytes(6).toString("hex")}:`;
  const kv = redisKv(process.env.NEST_REDIS_URL ?? "redis://127.0.0.1:6379", prefix);
  return {
    kv,
    elapse: sleep,
    close: async () => {
      for (const k of await kv.list("")) await kv.delete(k);
      await kv.close();
    },
  };
});
