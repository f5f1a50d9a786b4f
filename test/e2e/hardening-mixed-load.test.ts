/**
 * Issue 14 §3 (and the 503 log level of §9), over HTTP against `nestlm serve`: batch items
 * submitted while interactive `/v1/generate` requests saturate the worker all finish, none
 * `failed`, each exactly once and on its first attempt: capacity is not a failure, and batch work
 * has its own share of the worker's slots. Interactive requests beyond their share get 503
 * `at_capacity` with `Retry-After`, logged below error level.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Redis } from "ioredis";
import { startServe, type Serve } from "./hardening-stack.ts";
import { deletePrefixKeys } from "./redis-cleanup.ts";

const KEY = "h14-load-key";
const REDIS_URL = process.env.NEST_REDIS_URL || "redis://127.0.0.1:6379";
const INTERACTIVE = 30;
const COUNTRIES = ["Australia", "Brazil", "Nepal", "Canada", "France", "Japan"];
let serve: Serve;
const auth = { authorization: `Bearer ${KEY}` };

beforeAll(async () => {
  serve = await startServe({ staticKey: KEY });
}, 180_000);

afterAll(async () => {
  await serve?.stop();
  await deletePrefixKeys(REDIS_URL, serve.prefix);
});

describe("batch items under interactive load", () => {
  it("all finish on their first attempt while 30 clients saturate the worker", async () => {
    let stop = false;
    const statuses = new Map<number, number>();
    const count = (s: number) => statuses.set(s, (statuses.get(s) ?? 0) + 1);
    const client = async (i: number) => {
      while (!stop) {
        const res = await fetch(`${serve.edgeUrl}/v1/generate`, {
          method: "POST",
          headers: { ...auth, "content-type": "application/json", accept: "application/json", "cache-control": "no-store" },
          body: JSON.stringify({ prompt: `Tell me about ${COUNTRIES[i % COUNTRIES.length]}.`, mode: "base", max_new_tokens: 24 }),
        });
        count(res.status);
        if (res.status === 503) expect(Number(res.headers.get("retry-after"))).toBeGreaterThan(0);
        await res.text();
        if (res.status === 503) await new Promise((r) => setTimeout(r, 200));
      }
    };
    const clients = Array.from({ length: INTERACTIVE }, (_, i) => client(i));
    // Let the interactive load fill every slot first.
    await new Promise((r) => setTimeout(r, 4000));

    const items = COUNTRIES.map((c, i) =>
      JSON.stringify({ custom_id: `b${i}`, prompt: `What is the capital of ${c}?`, mode: "base", max_new_tokens: 8 }),
    );
    const sub = await fetch(`${serve.edgeUrl}/v1/batches`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/x-ndjson" },
      body: items.join("\n"),
    });
    expect(sub.status).toBe(201);
    const id = ((await sub.json()) as { id: string }).id;
    const t0 = Date.now();
    let status: { status: string; counts: Record<string, number> };
    try {
      for (;;) {
        status = (await (await fetch(`${serve.edgeUrl}/v1/batches/${id}`, { headers: auth })).json()) as typeof status;
        if (status.status === "completed" || Date.now() - t0 > 240_000) break;
        await new Promise((r) => setTimeout(r, 1000));
      }
    } finally {
      stop = true;
      await Promise.all(clients);
    }
    // The load was real: interactive requests were refused for capacity while the batch ran.
    expect(statuses.get(503) ?? 0).toBeGreaterThan(0);
    expect(statuses.get(200) ?? 0).toBeGreaterThan(0);
    expect([...statuses.keys()].filter((s) => s !== 200 && s !== 503)).toEqual([]);

    expect(status!.counts).toEqual({ queued: 0, running: 0, done: 6, failed: 0, canceled: 0 });
    const lines = (await (await fetch(`${serve.edgeUrl}/v1/batches/${id}/results`, { headers: auth })).text())
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l));
    expect(lines.map((l: { custom_id: string; status: string; attempts: number }) => `${l.custom_id}:${l.status}:${l.attempts}`)).toEqual(
      COUNTRIES.map((_, i) => `b${i}:done:1`),
    );
    const redis = new Redis(REDIS_URL);
    try {
      const completed = await redis.zrange(`${serve.prefix}:batch-items:completed`, 0, -1);
      expect(completed.filter((j) => j.startsWith(id)).sort()).toEqual(COUNTRIES.map((_, i) => `${id}-${i}`));
    } finally {
      await redis.quit();
    }
    // §9: 503s are expected under load: logged as warnings, never at error level.
    expect(serve.stderr()).not.toMatch(/error at_capacity/);
    expect(serve.stderr()).toMatch(/warn at_capacity/);
  }, 400_000);
});
