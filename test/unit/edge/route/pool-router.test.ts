/** The router over real HTTP pools (small Hono servers standing in for gpu-worker pools' decode API). */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Hono } from "hono";
import { serve } from "@hono/node-server";
import type { AddressInfo } from "node:net";
import { createPoolRouter } from "@nest/edge/route/pool-router";
import type { DecodeJob } from "@nest/shared/protocol/worker";

const servers: ReturnType<typeof serve>[] = [];
const hits: Record<string, number> = {};
async function pool(name: string, mode: "busy" | "ok", retryAfter = 5): Promise<string> {
  const app = new Hono();
  app.get("/healthz", (c) => c.json({ status: "ok", model: "m-" + name }));
  app.post("/v1/decode", (c) => {
    hits[name] = (hits[name] ?? 0) + 1;
    if (mode === "busy") {
      c.header("Retry-After", String(retryAfter));
      return c.json({ error: { code: "at_capacity", message: "busy" } }, 503);
    }
    return c.body(
      "event: done\ndata: " +
        JSON.stringify({
          finish_reason: "stop",
          mode: "base",
          model: "m",
          usage: {
            prompt_tokens: 1,
            completion_tokens: 0,
            lm_forward_passes: 0,
            drafted_tokens: 0,
            accepted_tokens: 0,
            attributed_tokens: 0,
            attribution_ratio: null,
            store_passages: 0,
            store_keys: 0,
          },
          timings_ms: { retrieval: 0, encoding: 0, knn: 0, lm: 0, total: 0 },
        }) +
        "\n\n",
      200,
      { "content-type": "text/event-stream" },
    );
  });
  const s = await new Promise<ReturnType<typeof serve>>((r) => {
    const x = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }, () => r(x));
  });
  servers.push(s);
  return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
}
const job = { request: { prompt: "x" }, passages: [] } as unknown as DecodeJob;
let busyA: string, busyB: string, ok: string, dead: string;

beforeAll(async () => {
  busyA = await pool("busyA", "busy", 7);
  busyB = await pool("busyB", "busy", 3);
  ok = await pool("ok", "ok");
  dead = "http://127.0.0.1:1";
});
afterAll(() => servers.forEach((s) => s.close()));

describe("createPoolRouter", () => {
  it("skips a busy (503) and a dead pool and answers from the next", async () => {
    const r = createPoolRouter({ pools: [dead, busyA, ok] });
    const events = [];
    for await (const e of await r.decode(job)) events.push(e.event);
    expect(events).toEqual(["done"]);
    expect(r.state().map((s) => [s.healthy, s.outstanding])).toEqual([
      [false, 0],
      [true, 0],
      [true, 0],
    ]);
  });

  it("all busy → at_capacity with the smallest Retry-After", async () => {
    const r = createPoolRouter({ pools: [busyA, busyB] });
    await expect(r.decode(job)).rejects.toMatchObject({ code: "at_capacity", status: 503, retryAfterS: 3 });
  });

  it("every pool marked down → upstream_unavailable (502, not at_capacity) with Retry-After", async () => {
    const r = createPoolRouter({ pools: [dead], retryDownMs: 10_000 });
    await expect(r.decode(job)).rejects.toMatchObject({ code: "upstream_unavailable", status: 502 });
    // Within retryDownMs the dead pool is not tried again: the answer says "down", not "busy".
    await expect(r.decode(job)).rejects.toMatchObject({
      code: "upstream_unavailable",
      status: 502,
      message: "no gpu-worker pool is up",
      retryAfterS: 10,
    });
  });

  it("prefers the pool with fewer requests in flight", async () => {
    const ok2 = await pool("ok2", "ok");
    const r = createPoolRouter({ pools: [ok, ok2] });
    hits.ok = 0;
    hits.ok2 = 0;
    const first = await r.decode(job); // in flight on `ok` until consumed
    expect(r.state().map((s) => s.outstanding)).toEqual([1, 0]);
    const second = await r.decode(job);
    expect([hits.ok, hits.ok2]).toEqual([1, 1]);
    for await (const _ of first) void _;
    for await (const _ of second) void _;
    expect(r.state().map((s) => s.outstanding)).toEqual([0, 0]);
    expect(await r.modelName!()).toBe("m-ok");
  });
});
