/**
 * The KvStore contract (`test/contract/kv-store.case.ts`) on Workers KV: the Worker's `NEST_CACHE`
 * namespace as Miniflare simulates it, through `workersKv`. Expiry is not checked (KV's minimum
 * TTL is 60 s).
 */
import { env } from "cloudflare:workers";
import { workersKv } from "@nest/edge/adapters/workers-kv";
import { kvStoreContract } from "../contract/kv-store.case.ts";

kvStoreContract("Workers KV", async () => ({ kv: workersKv(env.NEST_CACHE) }));
