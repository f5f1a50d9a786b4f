// Metrics of the gpu-worker (gpu-worker/src/metrics.ts): a known event stream through
// observeDecode → hand-computed counters and histogram buckets; a real request through the worker
// app (real model, base mode, 3 tokens) → /metrics agrees with the done event; queue depth from a
// real BullMQ queue on Redis 127.0.0.1:6379 (waiting and prioritized apart).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { randomBytes } from "node:crypto";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import type { GenerateEvent } from "@nest/shared/protocol/events";
import { GenerateRequestSchema } from "@nest/shared/protocol/request";
import { WorkerMetrics, queueDepthSource, routeLabel } from "@nest/gpu-worker/metrics";
import { Readiness, opsRoutes } from "@nest/gpu-worker/ops";
import { createWorkerApp } from "@nest/gpu-worker/server";
import { InferenceHost } from "@nest/gpu-worker/engine/inference-host";
import { findModelDir } from "@nest/gpu-worker/runtime/prepare-model";
import { ITEM_QUEUE } from "@nest/gpu-worker/batch/config";
import { Hono } from "hono";

const usage = {
  prompt_tokens: 10,
  completion_tokens: 6,
  lm_forward_passes: 3,
  drafted_tokens: 5,
  accepted_tokens: 4,
  num_drafts: 2,
  attributed_tokens: 4,
  attribution_ratio: 4 / 6,
  store_passages: 3,
  store_keys: 90,
  encoded_passages: 1,
  cited_tokens: 3,
};
const timings_ms = { retrieval: 0, encoding: 1, knn: 1, lm: 1, total: 3 };

/** Values of one metric as `{"label=value,...": value}` (prom-client's own JSON). */
async function values(m: WorkerMetrics, name: string): Promise<Record<string, number>> {
  const metric = m.registry.getSingleMetric(name);
  if (!metric) throw new Error(`no metric ${name}`);
  const out: Record<string, number> = {};
  for (const v of (await metric.get()).values) {
    const labels = Object.entries(v.labels)
      .map(([k, x]) => `${k}=${x}`)
      .sort()
      .join(",");
    out[`${(v as { metricName?: string }).metricName ?? name}{${labels}}`] = v.value;
  }
  return out;
}

/** Events with a scripted clock: each step advances `clock.now` before the event is yielded. */
async function* scripted(clock: { now: number }, steps: [number, GenerateEvent][]): AsyncGenerator<GenerateEvent> {
  for (const [atMs, e] of steps) {
    clock.now = atMs;
    yield e;
  }
}

describe("WorkerMetrics.observeDecode", () => {
  it("turns one nest job's events into the hand-computed counters and buckets", async () => {
    const clock = { now: 0 };
    const m = new WorkerMetrics({ processMetrics: false, nowMs: () => clock.now });
    const events = scripted(clock, [
      [300, { event: "delta", data: { text: "Can", tokens: 2 } }],
      [700, { event: "delta", data: { text: "berra", tokens: 4 } }],
      [1200, { event: "done", data: { finish_reason: "stop", mode: "nest", model: "m", usage, timings_ms } as never }],
    ]);
    const seen: string[] = [];
    for await (const e of m.observeDecode("nest", events)) seen.push(e.event);
    expect(seen).toEqual(["delta", "delta", "done"]);

    const l = "mode=nest,source=http";
    expect(await values(m, "nest_worker_completion_tokens_total")).toEqual({ [`nest_worker_completion_tokens_total{${l}}`]: 6 });
    expect((await values(m, "nest_worker_prompt_tokens_total"))[`nest_worker_prompt_tokens_total{${l}}`]).toBe(10);
    expect((await values(m, "nest_worker_lm_forward_passes_total"))[`nest_worker_lm_forward_passes_total{${l}}`]).toBe(3);
    expect((await values(m, "nest_worker_drafted_tokens_total"))[`nest_worker_drafted_tokens_total{${l}}`]).toBe(5);
    expect((await values(m, "nest_worker_accepted_tokens_total"))[`nest_worker_accepted_tokens_total{${l}}`]).toBe(4);
    expect((await values(m, "nest_worker_drafts_total"))[`nest_worker_drafts_total{${l}}`]).toBe(2);
    expect((await values(m, "nest_worker_attributed_tokens_total"))[`nest_worker_attributed_tokens_total{${l}}`]).toBe(4);
    expect((await values(m, "nest_worker_cited_tokens_total"))[`nest_worker_cited_tokens_total{${l}}`]).toBe(3);
    expect(await values(m, "nest_worker_mean_acceptance_length_tokens")).toEqual({
      "nest_worker_mean_acceptance_length_tokens{mode=nest}": 2,
    });
    expect(await values(m, "nest_worker_passage_key_cache_lookups_total")).toEqual({
      "nest_worker_passage_key_cache_lookups_total{result=hit}": 2,
      "nest_worker_passage_key_cache_lookups_total{result=miss}": 1,
    });
    expect(await values(m, "nest_worker_decode_outcomes_total")).toEqual({
      "nest_worker_decode_outcomes_total{mode=nest,outcome=stop,source=http}": 1,
    });
    expect(await values(m, "nest_worker_inflight_requests")).toEqual({ "nest_worker_inflight_requests{source=http}": 0 });

    // Time to first token 0.3 s: first in bucket le=0.5. Total 1.2 s: first in le=2.
    const ttft = await values(m, "nest_worker_time_to_first_token_seconds");
    expect(ttft[`nest_worker_time_to_first_token_seconds_bucket{le=0.25,${l}}`]).toBe(0);
    expect(ttft[`nest_worker_time_to_first_token_seconds_bucket{le=0.5,${l}}`]).toBe(1);
    expect(ttft[`nest_worker_time_to_first_token_seconds_sum{${l}}`]).toBeCloseTo(0.3, 12);
    expect(ttft[`nest_worker_time_to_first_token_seconds_count{${l}}`]).toBe(1);
    const total = await values(m, "nest_worker_decode_duration_seconds");
    expect(total[`nest_worker_decode_duration_seconds_bucket{le=1,${l}}`]).toBe(0);
    expect(total[`nest_worker_decode_duration_seconds_bucket{le=2,${l}}`]).toBe(1);
    expect(total[`nest_worker_decode_duration_seconds_sum{${l}}`]).toBeCloseTo(1.2, 12);
    // Accepted span length 4 / 2 = 2 tokens: le=1 → 0, le=2 → 1. Attribution 0.667: le=0.6 → 0, le=0.7 → 1.
    const span = await values(m, "nest_worker_accepted_span_length_tokens");
    expect([
      span[`nest_worker_accepted_span_length_tokens_bucket{le=1,${l}}`],
      span[`nest_worker_accepted_span_length_tokens_bucket{le=2,${l}}`],
    ]).toEqual([0, 1]);
    const ratio = await values(m, "nest_worker_attribution_ratio");
    expect([
      ratio[`nest_worker_attribution_ratio_bucket{le=0.6,${l}}`],
      ratio[`nest_worker_attribution_ratio_bucket{le=0.7,${l}}`],
    ]).toEqual([0, 1]);
  });

  it("counts a stream left early as cancelled and an error event by its code; in flight only while it runs", async () => {
    const m = new WorkerMetrics({ processMetrics: false });
    const a = m.observeDecode(
      "base",
      scripted({ now: 0 }, [
        [0, { event: "delta", data: { text: "x", tokens: 1 } }],
        [0, { event: "delta", data: { text: "y", tokens: 1 } }],
      ]),
    );
    await a.next();
    expect(await values(m, "nest_worker_inflight_requests")).toEqual({ "nest_worker_inflight_requests{source=http}": 1 });
    await a.return(undefined);
    for await (const _ of m.observeDecode(
      "rag",
      scripted({ now: 0 }, [[0, { event: "error", data: { error: { code: "model_not_prepared", message: "no model" } } }]]),
      "batch",
    ))
      void _;
    expect(await values(m, "nest_worker_decode_outcomes_total")).toEqual({
      "nest_worker_decode_outcomes_total{mode=base,outcome=cancelled,source=http}": 1,
      "nest_worker_decode_outcomes_total{mode=rag,outcome=model_not_prepared,source=batch}": 1,
    });
    expect(await values(m, "nest_worker_inflight_requests")).toEqual({
      "nest_worker_inflight_requests{source=http}": 0,
      "nest_worker_inflight_requests{source=batch}": 0,
    });
    expect(await values(m, "nest_worker_completion_tokens_total")).toEqual({});
  });

  it("labels routes with a bounded set", () => {
    expect(["/v1/decode", "/v1/batches/batch_1/results", "/v1/batches", "/x/../etc", "/metrics"].map(routeLabel)).toEqual([
      "/v1/decode",
      "/v1/batches",
      "/v1/batches",
      "other",
      "/metrics",
    ]);
  });
});

describe("/readyz and /metrics", () => {
  it("answers readiness by state and serves the registry as Prometheus text", async () => {
    const metrics = new WorkerMetrics({ processMetrics: false });
    const readiness = new Readiness();
    const app = new Hono();
    app.use(metrics.middleware());
    app.use(opsRoutes({ metrics, readiness }));
    const states: [number, unknown][] = [];
    for (const step of [() => {}, () => readiness.markReady(), () => readiness.drain()]) {
      step();
      const r = await app.request("/readyz");
      states.push([r.status, await r.json()]);
    }
    expect(states).toEqual([
      [503, { status: "starting" }],
      [200, { status: "ready" }],
      [503, { status: "draining" }],
    ]);
    const res = await app.request("/metrics");
    expect(res.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
    const text = await res.text();
    expect(text).toContain('nest_worker_requests_total{route="/readyz",mode="",status="503"} 2');
    expect(text).toContain('nest_worker_requests_total{route="/readyz",mode="",status="200"} 1');
    expect(text).toContain("# TYPE nest_worker_time_to_first_token_seconds histogram");
  });
});

describe("batch queue depth", () => {
  const prefix = `nest-metrics-test-${randomBytes(4).toString("hex")}`;
  const redis = new Redis("redis://127.0.0.1:6379", { maxRetriesPerRequest: 1 });
  const queue = new Queue(ITEM_QUEUE, { connection: redis, prefix });
  afterAll(async () => {
    await queue.obliterate({ force: true });
    await queue.close();
    await redis.quit();
  });

  it("exports BullMQ's waiting and prioritized counts apart (prioritized jobs are not in the wait list)", async () => {
    await queue.add("item", { n: 1 });
    await queue.add("item", { n: 2 });
    await queue.add("item", { n: 3 }, { priority: 5 });
    await queue.add("item", { n: 4 }, { delay: 60_000 });
    expect(await redis.llen(`${prefix}:${ITEM_QUEUE}:wait`)).toBe(2);
    expect(await redis.zcard(`${prefix}:${ITEM_QUEUE}:prioritized`)).toBe(1);
    const depth = queueDepthSource("redis://127.0.0.1:6379", prefix);
    try {
      const m = new WorkerMetrics({ processMetrics: false, queueDepth: depth });
      const q = `queue=${ITEM_QUEUE}`;
      expect(await values(m, "nest_batch_queue_jobs")).toEqual({
        [`nest_batch_queue_jobs{${q},state=waiting}`]: 2,
        [`nest_batch_queue_jobs{${q},state=prioritized}`]: 1,
        [`nest_batch_queue_jobs{${q},state=active}`]: 0,
        [`nest_batch_queue_jobs{${q},state=delayed}`]: 1,
        [`nest_batch_queue_jobs{${q},state=failed}`]: 0,
      });
    } finally {
      await depth.close();
    }
  });

  it("exports no sample when Redis cannot be reached (KEDA must not read a wrong 0)", async () => {
    const depth = queueDepthSource("redis://127.0.0.1:1", prefix);
    try {
      const m = new WorkerMetrics({ processMetrics: false, queueDepth: depth });
      expect(await values(m, "nest_batch_queue_jobs")).toEqual({});
    } finally {
      await depth.close().catch(() => {});
    }
  });
});

describe("the worker app with metrics (real model)", () => {
  let host: InferenceHost;
  const metrics = new WorkerMetrics({ processMetrics: false });
  beforeAll(async () => {
    host = await InferenceHost.start({ modelDir: await findModelDir(), threads: 1 });
    metrics.bindLoad(() => host.load);
  });
  afterAll(async () => {
    await host?.close();
  });

  it("counts a decode by route, mode and status, and its usage equals the done event's", async () => {
    const app = createWorkerApp(host, async () => undefined, undefined, {}, { metrics });
    const job = {
      request: GenerateRequestSchema.parse({ prompt: "What is the capital of France?", mode: "base", max_new_tokens: 3 }),
      passages: [],
    };
    const res = await app.request("/v1/decode", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(job),
    });
    expect(res.status).toBe(200);
    const sse = await res.text();
    const done = JSON.parse(/event: done\ndata: (.*)\n/.exec(sse)![1]!) as { usage: typeof usage; finish_reason: string };
    const bad = await app.request("/v1/decode", { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    expect(bad.status).toBe(400);

    const text = await (await app.request("/metrics")).text();
    expect(text).toContain('nest_worker_requests_total{route="/v1/decode",mode="base",status="200"} 1');
    expect(text).toContain('nest_worker_requests_total{route="/v1/decode",mode="",status="400"} 1');
    expect(text).toContain(`nest_worker_completion_tokens_total{source="http",mode="base"} ${done.usage.completion_tokens}`);
    expect(text).toContain(`nest_worker_prompt_tokens_total{source="http",mode="base"} ${done.usage.prompt_tokens}`);
    expect(text).toContain(`nest_worker_lm_forward_passes_total{source="http",mode="base"} ${done.usage.lm_forward_passes}`);
    expect(text).toContain(`nest_worker_decode_outcomes_total{source="http",mode="base",outcome="${done.finish_reason}"} 1`);
    expect(text).toContain('nest_worker_time_to_first_token_seconds_count{source="http",mode="base"} 1');
    expect(text).toContain('nest_worker_decode_duration_seconds_count{source="http",mode="base"} 1');
    expect(text).toContain('nest_worker_inflight_requests{source="http"} 0');
    expect(text).toContain('nest_worker_inference_jobs{state="running"} 0');
    expect(done.usage.completion_tokens).toBeGreaterThan(0);
    expect(done.usage.completion_tokens).toBeLessThanOrEqual(3);
  });
});
