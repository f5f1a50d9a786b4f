/**
 * Issue 14 §5, over HTTP against `nestlm serve` on a private `redis-server` (random port, started
 * and stopped here; the shared Redis is never touched): while Redis is down, the batch routes answer
 * 503 `queue_unavailable` with `Retry-After`, the servers log one line for the outage (no stack
 * traces), and once Redis is back everything recovers by itself: the batch finishes.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startPrivateRedis, startServe, type PrivateRedis, type Serve } from "./hardening-stack.ts";

const KEY = "h14-redis-key";
let redis: PrivateRedis;
let serve: Serve;
const auth = { authorization: `Bearer ${KEY}` };
const batchBody = ["Australia", "Brazil"]
  .map((c, i) => JSON.stringify({ custom_id: `r${i}`, prompt: `What is the capital of ${c}?`, mode: "base", max_new_tokens: 4 }))
  .join("\n");

beforeAll(async () => {
  redis = await startPrivateRedis();
  serve = await startServe({ staticKey: KEY, env: { NEST_REDIS_URL: redis.url } });
}, 180_000);

afterAll(async () => {
  await serve?.stop();
  await redis?.dispose();
});

describe("a Redis outage", () => {
  it("answers 503 queue_unavailable with Retry-After, logs one line, and recovers by itself", async () => {
    const sub = await fetch(`${serve.edgeUrl}/v1/batches`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/x-ndjson" },
      body: batchBody,
    });
    expect(sub.status).toBe(201);
    const id = ((await sub.json()) as { id: string }).id;
    const before = serve.stderr().length;

    await redis.stop();
    for (const [path, init] of [
      [`/v1/batches/${id}`, {}],
      ["/v1/batches", { method: "POST", headers: { ...auth, "content-type": "application/x-ndjson" }, body: batchBody }],
      [`/v1/batches/${id}/results`, {}],
    ] as const) {
      const res = await fetch(`${serve.edgeUrl}${path}`, { headers: auth, ...init });
      expect({ path, status: res.status }).toEqual({ path, status: 503 });
      expect(Number(res.headers.get("retry-after"))).toBeGreaterThan(0);
      const body = (await res.json()) as { error: { code: string; message: string } };
      expect(body.error.code).toBe("queue_unavailable");
      expect(body.error.message).not.toMatch(/max retries|ioredis/i);
    }
    // Down for about 8 s in all, as the consumer keeps trying to reconnect.
    await new Promise((r) => setTimeout(r, 6000));
    const during = serve.stderr().slice(before);
    expect(during).not.toMatch(/^\s+at /m); // no stack traces
    expect(during.match(/redis: unavailable at/g)?.length).toBe(1);
    expect(during.split("\n").filter((l) => /redis|ECONNREFUSED|max retries/i.test(l)).length).toBeLessThanOrEqual(4);

    await redis.start();
    await serve.waitForLog(/redis: back at/, 30_000);
    const t0 = Date.now();
    let status: { status: string; counts: Record<string, number> } | undefined;
    for (;;) {
      const res = await fetch(`${serve.edgeUrl}/v1/batches/${id}`, { headers: auth });
      if (res.status === 200) {
        status = (await res.json()) as typeof status;
        if (status!.status === "completed") break;
      }
      if (Date.now() - t0 > 120_000) throw new Error(`batch did not complete after the outage: ${res.status} ${JSON.stringify(status)}`);
      await new Promise((r) => setTimeout(r, 500));
    }
    expect(status!.counts).toEqual({ queued: 0, running: 0, done: 2, failed: 0, canceled: 0 });
    const after = serve.stderr().slice(before);
    expect(after).not.toMatch(/^\s+at /m);
    expect(after.match(/redis: unavailable at/g)?.length).toBe(1);
  }, 240_000);
});

describe("Redis down when the stack starts", () => {
  it("starts anyway: generations work, batch routes answer 503 queue_unavailable, and once Redis is up a batch completes", async () => {
    const late = await startPrivateRedis();
    await late.stop();
    const s = await startServe({ staticKey: KEY, env: { NEST_REDIS_URL: late.url } });
    try {
      const gen = await fetch(`${s.edgeUrl}/v1/generate`, {
        method: "POST",
        headers: { ...auth, "content-type": "application/json", accept: "application/json" },
        body: JSON.stringify({ prompt: "What is the capital of Peru?", mode: "base", max_new_tokens: 4 }),
      });
      expect(gen.status).toBe(200);
      const down = await fetch(`${s.edgeUrl}/v1/batches`, {
        method: "POST",
        headers: { ...auth, "content-type": "application/x-ndjson" },
        body: batchBody,
      });
      expect(down.status).toBe(503);
      expect(((await down.json()) as { error: { code: string } }).error.code).toBe("queue_unavailable");
      expect(s.stderr()).toMatch(/redis: unavailable at/);

      await late.start();
      await s.waitForLog(/redis: back at/, 30_000);
      let sub: Response | undefined;
      for (let i = 0; i < 20; i++) {
        sub = await fetch(`${s.edgeUrl}/v1/batches`, {
          method: "POST",
          headers: { ...auth, "content-type": "application/x-ndjson" },
          body: batchBody,
        });
        if (sub.status === 201) break;
        await new Promise((r) => setTimeout(r, 500));
      }
      expect(sub!.status).toBe(201);
      const id = ((await sub!.json()) as { id: string }).id;
      const t0 = Date.now();
      for (;;) {
        const res = await fetch(`${s.edgeUrl}/v1/batches/${id}`, { headers: auth });
        const status = res.status === 200 ? ((await res.json()) as { status: string }).status : undefined;
        if (status === "completed") break;
        if (Date.now() - t0 > 120_000) throw new Error(`batch did not complete: ${res.status} ${status}`);
        await new Promise((r) => setTimeout(r, 500));
      }
      expect(s.stderr()).not.toMatch(/^\s+at /m);
    } finally {
      await s.stop();
      await late.dispose();
    }
  }, 240_000);
});
