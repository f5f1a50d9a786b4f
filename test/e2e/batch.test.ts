/**
 * Batch jobs end to end (issue 6) on the real Redis (127.0.0.1:6379, or NEST_REDIS_URL) with a
 * random key prefix per run, deleted afterwards: the edge's `/v1/batches` routes forward over HTTP
 * to the pool's job API, which enqueues on BullMQ; consumers are real `consumer-main.ts` processes
 * with the real model and corpus. Requests are kept cheap (mostly mode `base`, 4 new tokens).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Hono } from "hono";
import { serve } from "@hono/node-server";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { toNestError } from "@nest/shared/protocol/errors";
import { createApp } from "@nest/edge/app";
import { sha256Hex } from "@nest/edge/middleware/auth";
import { keyAuth } from "@nest/edge/middleware/keys";
import { createPoolClient } from "@nest/edge/route/pool-client";
import { registerBatchRoutes } from "@nest/edge/routes/batches";
import { REPO_ROOT } from "@nest/corpus/home";
import { prepareModel } from "@nest/gpu-worker/runtime/prepare-model";
import { prepareCorpus } from "@nest/corpus/prepare-corpus";
import { findCorpusDir } from "@nest/corpus/layout";
import { BatchQueue } from "@nest/gpu-worker/batch/batch-queue";
import { registerJobApiRoutes } from "@nest/gpu-worker/batch/job-api";
import { ITEM_QUEUE } from "@nest/gpu-worker/batch/config";
import { RedisPolicyError } from "@nest/gpu-worker/batch/redis-policy";
import type { BatchResultLine, BatchStatus, SubmitResponse } from "@nest/gpu-worker/batch/protocol";
import { GenerateRequestSchema } from "@nest/shared/protocol/request";
import { deletePrefixKeys } from "./redis-cleanup.ts";

const REDIS_URL = process.env.NEST_REDIS_URL || "redis://127.0.0.1:6379";
const PREFIX = `nest-test-${randomBytes(4).toString("hex")}`;
const KEY = "batch-e2e-key";
const AUTH = { authorization: `Bearer ${KEY}` };
const COUNTRIES = ["Australia", "Brazil", "Nepal", "Canada", "France", "Japan", "Kenya", "Peru", "Norway", "Egypt"];

type Server = { url: string; close(): Promise<void> };
let redis: Redis;
let bull: Queue;
let queue: BatchQueue;
let jobApi: Server;
let edge: Server;
const consumers = new Set<ChildProcess>();

async function listen(app: Pick<Hono, "fetch">): Promise<Server> {
  const server = await new Promise<ReturnType<typeof serve>>((resolve) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }, () => resolve(s));
  });
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((r) => server.close(() => r())) };
}

/** Starts a consumer process; resolves once it prints its ready line. */
async function startConsumer(args: string[] = []): Promise<{ proc: ChildProcess; exit: Promise<number | null>; stderr: () => string }> {
  const proc = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      "gpu-worker/src/batch/consumer-main.ts",
      "--prefix",
      PREFIX,
      "--lock-ms",
      "4000",
      "--stalled-interval-ms",
      "2000",
      ...args,
    ],
    {
      cwd: REPO_ROOT,
      env: { ...process.env, NEST_REDIS_URL: REDIS_URL },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  consumers.add(proc);
  let out = "";
  let err = "";
  proc.stderr!.on("data", (d) => (err += String(d)));
  const exit = new Promise<number | null>((r) =>
    proc.once("exit", (code) => {
      consumers.delete(proc);
      r(code);
    }),
  );
  await new Promise<void>((resolve, reject) => {
    proc.stdout!.on("data", (d) => {
      out += String(d);
      if (out.includes("batch consumer ready")) resolve();
    });
    void exit.then((code) => reject(new Error(`consumer exited (${code}) before ready: ${err}`)));
  });
  return { proc, exit, stderr: () => err };
}

async function submit(body: string, headers: Record<string, string> = {}): Promise<{ status: number; json: SubmitResponse }> {
  const res = await fetch(`${edge.url}/v1/batches`, {
    method: "POST",
    headers: { ...AUTH, "content-type": "application/x-ndjson", ...headers },
    body,
  });
  return { status: res.status, json: (await res.json()) as SubmitResponse };
}

async function status(id: string): Promise<BatchStatus> {
  const res = await fetch(`${edge.url}/v1/batches/${id}`, { headers: AUTH });
  expect(res.status).toBe(200);
  return (await res.json()) as BatchStatus;
}

/** The result lines and the `x-batch-status` header (whether they are final). */
async function resultsWithStatus(id: string): Promise<{ lines: BatchResultLine[]; batchStatus: string | null }> {
  const res = await fetch(`${edge.url}/v1/batches/${id}/results`, { headers: AUTH });
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toBe("application/x-ndjson");
  const text = await res.text();
  const lines = text
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l) as BatchResultLine);
  return { lines, batchStatus: res.headers.get("x-batch-status") };
}

/** The result lines of a finished batch (asserts `x-batch-status` says they are final). */
async function results(id: string): Promise<BatchResultLine[]> {
  const { lines, batchStatus } = await resultsWithStatus(id);
  expect(["completed", "canceled"]).toContain(batchStatus);
  return lines;
}

/** Polls the status until `pred` holds (every 250 ms, up to `timeoutMs`). */
async function until(id: string, pred: (s: BatchStatus) => boolean, timeoutMs = 240_000): Promise<BatchStatus> {
  const t0 = Date.now();
  for (;;) {
    const s = await status(id);
    if (pred(s)) return s;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out; last status ${JSON.stringify(s)}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

const line = (o: object) => JSON.stringify(o);
const cheap = (i: number) => ({ prompt: `What is the capital of ${COUNTRIES[i % COUNTRIES.length]}?`, mode: "base", max_new_tokens: 4 });

beforeAll(async () => {
  await prepareModel({ log: () => {} });
  await prepareCorpus({ log: () => {} });
  redis = new Redis(REDIS_URL);
  bull = new Queue(ITEM_QUEUE, { connection: { url: REDIS_URL }, prefix: PREFIX });
  queue = await BatchQueue.open({ redisUrl: REDIS_URL, prefix: PREFIX, attempts: 3, backoffMs: 300 });
  const pool = new Hono();
  // The pool serves the corpora prepared in $NEST_HOME (factbook here), as the consumers do.
  const hasCorpus = (corpus: string) =>
    findCorpusDir(corpus).then(
      () => true,
      () => false,
    );
  registerJobApiRoutes(pool, queue, { hasCorpus });
  pool.onError((err, c) => c.json(toNestError(err).toBody(), toNestError(err).status as 400));
  jobApi = await listen(pool);
  const app = createApp({ apiKeyHashes: [await sha256Hex(KEY)], pool: createPoolClient(jobApi.url), indexFor: async () => undefined });
  registerBatchRoutes(app, { poolUrl: jobApi.url, auth: keyAuth({ staticHashes: [await sha256Hex(KEY)] }, "batch") });
  edge = await listen(app);
});

afterAll(async () => {
  for (const p of consumers) p.kill("SIGKILL");
  await edge?.close();
  await jobApi?.close();
  await queue?.close();
  await bull?.close();
  if (redis) {
    await deletePrefixKeys(redis, PREFIX);
    await redis.quit();
  }
});

describe("batch jobs through BullMQ on Redis", () => {
  let consumerB: Awaited<ReturnType<typeof startConsumer>>;

  it("keeps all 50 results, exactly once and in input order, when a consumer is SIGKILLed mid-batch", async () => {
    // Every 10th item runs nest mode on 2 passages (retrieval + token store); the rest mode base.
    const body = Array.from({ length: 50 }, (_, i) =>
      line({
        custom_id: `q-${String(i).padStart(2, "0")}`,
        ...cheap(i),
        ...(i % 10 === 9 ? { mode: "nest", passages: 2 } : {}),
      }),
    ).join("\n");
    const { status: code, json: sub } = await submit(body);
    expect(code).toBe(201);
    expect(sub.id).toMatch(/^batch_[0-9a-f]{24}$/);
    expect(sub).toMatchObject({
      status: "queued",
      total: 50,
      idempotent_replay: false,
      progress: 0,
      counts: { queued: 50, running: 0, done: 0, failed: 0, canceled: 0 },
    });

    // Nothing finished yet: an empty body, and the header says it is not final.
    expect(await resultsWithStatus(sub.id)).toEqual({ lines: [], batchStatus: "queued" });

    const a = await startConsumer();
    await until(sub.id, (s) => s.counts.done >= 8);
    const partial = await resultsWithStatus(sub.id);
    expect(partial.batchStatus).toBe("running");
    expect(partial.lines.length).toBeGreaterThanOrEqual(8);
    expect(partial.lines.length).toBeLessThan(50);
    a.proc.kill("SIGKILL");
    expect(await a.exit).toBe(null);
    // The dead consumer's item is still `active` (its lock just stops being renewed).
    const orphans = (await bull.getActive()).filter((j) => j.data.batch_id === sub.id);
    expect(orphans.length).toBe(1);
    const mid = await status(sub.id);
    expect(mid.counts.running).toBe(1);
    expect(mid.status).toBe("running");

    consumerB = await startConsumer(["--concurrency", "2"]);
    const end = await until(sub.id, (s) => s.status === "completed");
    expect(end.counts).toEqual({ queued: 0, running: 0, done: 50, failed: 0, canceled: 0 });
    expect(end.progress).toBe(1);

    const lines = await results(sub.id);
    expect(lines.map((l) => l.custom_id)).toEqual(Array.from({ length: 50 }, (_, i) => `q-${String(i).padStart(2, "0")}`));
    expect(lines.map((l) => l.index)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    for (const [i, l] of lines.entries()) {
      expect(l.status).toBe("done");
      if (l.status !== "done") continue;
      expect(l.mode).toBe(i % 10 === 9 ? "nest" : "base");
      expect(l.usage.completion_tokens).toBeGreaterThanOrEqual(1);
      expect(l.usage.completion_tokens).toBeLessThanOrEqual(4);
      expect(l.text.length).toBeGreaterThan(0);
      for (const c of l.citations) expect(l.text.slice(c.text_start, c.text_end).length).toBe(c.text_end - c.text_start);
    }
    // The orphaned item was recovered by the stalled-job check and completed once, by B.
    const orphan = await bull.getJob(orphans[0]!.id!);
    expect(orphan!.stalledCounter).toBe(1);
    expect(await orphan!.getState()).toBe("completed");
    const completed = (await bull.getCompleted(0, -1)).filter((j) => j.data.batch_id === sub.id);
    expect(completed.length).toBe(50);
    expect(new Set(completed.map((j) => j.id)).size).toBe(50);
  }, 400_000);

  it("refuses an item naming an unknown corpus at submission: 404 naming the line, nothing enqueued", async () => {
    const before = (await bull.getJobCounts()) as Record<string, number>;
    const { status: code, json } = await submit(
      [line({ custom_id: "ok", ...cheap(0) }), line({ prompt: "ok", corpus: "nope", max_new_tokens: 4, custom_id: "badcorpus" })].join(
        "\n",
      ),
    );
    expect(code).toBe(404);
    expect(json).toEqual({ error: { code: "not_found", message: "line 2: corpus: unknown corpus `nope`" } });
    expect(await bull.getJobCounts()).toEqual(before);
  });

  it("fails an item whose corpus is gone by the time it runs at once (attempts 1), without the backoff", async () => {
    // Submitted past the job API's check (as if the corpus was removed after submission), owned by
    // the edge's key so that its routes see it.
    const sub = await queue.submit(
      [
        { index: 0, custom_id: "ok", request: GenerateRequestSchema.parse(cheap(0)) },
        {
          index: 1,
          custom_id: "bad",
          request: GenerateRequestSchema.parse({ prompt: "What is the capital of Peru?", corpus: "no-such-corpus", max_new_tokens: 4 }),
        },
      ],
      undefined,
      await sha256Hex(KEY),
    );
    const end = await until(sub.id, (s) => s.status === "completed", 60_000);
    expect(end.counts).toEqual({ queued: 0, running: 0, done: 1, failed: 1, canceled: 0 });
    const [ok, bad] = await results(sub.id);
    expect(ok).toMatchObject({ index: 0, custom_id: "ok", status: "done", attempts: 1 });
    expect(bad).toEqual({
      index: 1,
      custom_id: "bad",
      status: "failed",
      attempts: 1,
      error: { code: "not_found", message: "unknown corpus `no-such-corpus`" },
    });
    // No retry: the first retry alone would have waited the 300 ms backoff.
    const job = await bull.getJob(`${sub.id}-1`);
    expect(job!.attemptsMade).toBe(1);
    expect(job!.finishedOn! - job!.processedOn!).toBeLessThan(300);
  }, 120_000);

  it("returns the same batch for a resubmission with the same Idempotency-Key", async () => {
    const items = [
      { custom_id: "a", ...cheap(1) },
      { custom_id: "b", ...cheap(2) },
    ];
    const key = { "idempotency-key": `idem-${PREFIX}` };
    const first = await submit(items.map(line).join("\n"), key);
    expect(first.status).toBe(201);
    // The same items as a JSON array: same batch, nothing enqueued twice.
    const again = await submit(JSON.stringify(items), { ...key, "content-type": "application/json" });
    expect(again.status).toBe(200);
    expect(again.json.id).toBe(first.json.id);
    expect(again.json.idempotent_replay).toBe(true);
    expect(again.json.total).toBe(2);
    const other = await submit(line({ custom_id: "c", ...cheap(3) }), key);
    expect(other.status).toBe(400);
    // The message names no batch (issue 14: another tenant could hold the key's first use).
    expect(other.json).toEqual({ error: { code: "invalid_request", message: "Idempotency-Key was already used for a different batch" } });
    await until(first.json.id, (s) => s.status === "completed", 60_000);
    expect((await bull.getJobs()).filter((j) => j.data.batch_id === first.json.id).length).toBe(2);
  }, 120_000);

  it("drains on SIGTERM, then cancel ends the items not started as canceled", async () => {
    const { json: sub } = await submit(Array.from({ length: 8 }, (_, i) => line({ custom_id: `c${i}`, ...cheap(i) })).join("\n"));
    await until(sub.id, (s) => s.counts.running >= 1, 60_000);
    consumerB.proc.kill("SIGTERM");
    expect(await consumerB.exit).toBe(0);
    expect(consumerB.stderr()).toContain("SIGTERM: draining");
    // Drained: nothing left active, the items it held finished.
    const drained = await status(sub.id);
    expect(drained.counts.running).toBe(0);
    expect(drained.counts.failed).toBe(0);
    const done = drained.counts.done;
    expect(done).toBeGreaterThanOrEqual(1);
    expect(drained.counts.queued).toBe(8 - done);

    const res = await fetch(`${edge.url}/v1/batches/${sub.id}/cancel`, { method: "POST", headers: AUTH });
    expect(res.status).toBe(200);
    const canceled = (await res.json()) as BatchStatus;
    expect(canceled.status).toBe("canceled");
    expect(canceled.counts).toEqual({ queued: 0, running: 0, done, failed: 0, canceled: 8 - done });
    expect(canceled.canceled_at).not.toBeNull();
    const lines = await results(sub.id);
    expect(lines.map((l) => l.status)).toEqual([...Array(done).fill("done"), ...Array(8 - done).fill("canceled")]);
    expect(lines.map((l) => l.custom_id)).toEqual(Array.from({ length: 8 }, (_, i) => `c${i}`));
  }, 120_000);

  it("answers clear errors: no key 401, bad line 400, unknown batch 404", async () => {
    const noKey = await fetch(`${edge.url}/v1/batches`, { method: "POST", body: line(cheap(0)) });
    expect(noKey.status).toBe(401);
    const bad = await submit([line(cheap(0)), line({ prompt: "x", max_new_tokens: -1 })].join("\n"));
    expect(bad.status).toBe(400);
    expect((bad.json as unknown as { error: { message: string } }).error.message).toMatch(/^line 2: max_new_tokens: /);
    const missing = await fetch(`${edge.url}/v1/batches/batch_${"0".repeat(24)}`, { headers: AUTH });
    expect(missing.status).toBe(404);
    expect(await missing.json()).toEqual({
      error: { code: "not_found", message: `no batch \`batch_${"0".repeat(24)}\` (unknown or expired)` },
    });
  });

  it("refuses to start unless Redis's maxmemory-policy is noeviction", async () => {
    const [, before] = (await redis.config("GET", "maxmemory-policy")) as [string, string];
    expect(before).toBe("noeviction");
    try {
      await redis.config("SET", "maxmemory-policy", "allkeys-lru");
      const opened = BatchQueue.open({ redisUrl: REDIS_URL, prefix: PREFIX });
      await expect(opened).rejects.toBeInstanceOf(RedisPolicyError);
      await expect(opened).rejects.toThrow(
        /maxmemory-policy `allkeys-lru`; batch jobs need `noeviction`.*CONFIG SET maxmemory-policy noeviction/,
      );
      // The consumer process checks before loading the model and exits 1 with the reason.
      const proc = spawn(process.execPath, ["--import", "tsx", "gpu-worker/src/batch/consumer-main.ts", "--prefix", PREFIX], {
        cwd: REPO_ROOT,
        env: { ...process.env, NEST_REDIS_URL: REDIS_URL },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let err = "";
      proc.stderr.on("data", (d) => (err += String(d)));
      expect(await new Promise((r) => proc.once("exit", r))).toBe(1);
      expect(err).toContain("maxmemory-policy `allkeys-lru`");
    } finally {
      await redis.config("SET", "maxmemory-policy", "noeviction");
    }
  }, 60_000);
});
