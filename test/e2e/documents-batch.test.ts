/**
 * Documents on a batch item (issue 15), end to end: the edge's `/v1/batches` → the pool's job API →
 * BullMQ on the real Redis (127.0.0.1:6379, random key prefix, deleted afterwards) → a real
 * `consumer-main.ts` process with the real model. The item carries two documents written here (one
 * with emoji, CRLF and a planted fact) in mode `rag-nest`; its result cites into the right document
 * at exact offsets. A batch with an item carrying documents and a corpus is refused at submission, the field named.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Hono } from "hono";
import { serve } from "@hono/node-server";
import { Redis } from "ioredis";
import { toNestError } from "@nest/shared/protocol/errors";
import { createApp } from "@nest/edge/app";
import { sha256Hex } from "@nest/edge/middleware/auth";
import { keyAuth } from "@nest/edge/middleware/keys";
import { createPoolClient } from "@nest/edge/route/pool-client";
import { registerBatchRoutes } from "@nest/edge/routes/batches";
import { REPO_ROOT } from "@nest/corpus/home";
import { prepareModel } from "@nest/gpu-worker/runtime/prepare-model";
import { BatchQueue } from "@nest/gpu-worker/batch/batch-queue";
import { registerJobApiRoutes } from "@nest/gpu-worker/batch/job-api";
import type { BatchResultLine, BatchStatus, SubmitResponse } from "@nest/gpu-worker/batch/protocol";
import { deletePrefixKeys } from "./redis-cleanup.ts";

const REDIS_URL = process.env.NEST_REDIS_URL || "redis://127.0.0.1:6379";
const PREFIX = `nest-test-${randomBytes(4).toString("hex")}`;
const KEY = "documents-batch-key";
const AUTH = { authorization: `Bearer ${KEY}` };
const DOCUMENTS = [
  { title: "Library rules", text: "The city library lends bicycles 🚲 to members.\r\nMembers renew loans online." },
  {
    id: "bakery",
    text:
      "Harbor Bakery staff handbook 🥐.\r\nThe bakery opens at seven and closes at three 🕖.\r\n" +
      "The secret ingredient of the Harbor Bakery sourdough is smoked cardamom.\r\nAprons are washed on Fridays 🧺.",
  },
];

type Server = { url: string; close(): Promise<void> };
let redis: Redis;
let queue: BatchQueue;
let jobApi: Server;
let edge: Server;
let consumer: ChildProcess | undefined;

async function listen(app: Pick<Hono, "fetch">): Promise<Server> {
  const server = await new Promise<ReturnType<typeof serve>>((resolve) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }, () => resolve(s));
  });
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((r) => server.close(() => r())) };
}

beforeAll(async () => {
  await prepareModel({ log: () => {} });
  redis = new Redis(REDIS_URL);
  queue = await BatchQueue.open({ redisUrl: REDIS_URL, prefix: PREFIX, attempts: 2, backoffMs: 300 });
  const pool = new Hono();
  registerJobApiRoutes(pool, queue);
  pool.onError((err, c) => c.json(toNestError(err).toBody(), toNestError(err).status as 400));
  jobApi = await listen(pool);
  const app = createApp({ apiKeyHashes: [await sha256Hex(KEY)], pool: createPoolClient(jobApi.url), indexFor: async () => undefined });
  registerBatchRoutes(app, { poolUrl: jobApi.url, auth: keyAuth({ staticHashes: [await sha256Hex(KEY)] }, "batch") });
  edge = await listen(app);
  const proc = spawn(process.execPath, ["--import", "tsx", "gpu-worker/src/batch/consumer-main.ts", "--prefix", PREFIX], {
    cwd: REPO_ROOT,
    env: { ...process.env, NEST_REDIS_URL: REDIS_URL },
    stdio: ["ignore", "pipe", "pipe"],
  });
  consumer = proc;
  let err = "";
  proc.stderr!.on("data", (d) => (err += String(d)));
  await new Promise<void>((resolve, reject) => {
    let out = "";
    proc.stdout!.on("data", (d) => {
      out += String(d);
      if (out.includes("batch consumer ready")) resolve();
    });
    proc.once("exit", (code) => reject(new Error(`consumer exited (${code}) before ready: ${err}`)));
  });
}, 600_000);

afterAll(async () => {
  consumer?.kill("SIGKILL");
  await edge?.close();
  await jobApi?.close();
  await queue?.close();
  if (redis) {
    await deletePrefixKeys(redis, PREFIX);
    await redis.quit();
  }
});

describe("batch item with documents", () => {
  it("refuses at submission an item with both documents and corpus, naming the line and field", async () => {
    const body = [
      { custom_id: "ok", prompt: "q?", documents: DOCUMENTS, max_new_tokens: 2 },
      { custom_id: "both", prompt: "q?", documents: DOCUMENTS, corpus: "factbook", max_new_tokens: 2 },
    ]
      .map((l) => JSON.stringify(l))
      .join("\n");
    const res = await fetch(`${edge.url}/v1/batches`, {
      method: "POST",
      headers: { ...AUTH, "content-type": "application/x-ndjson" },
      body,
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({
      error: { code: "invalid_request", message: "line 2: corpus: give either `documents` or `corpus`, not both" },
    });
  });

  it("answers the planted fact and cites into the right document at exact offsets", async () => {
    const body = JSON.stringify({
      custom_id: "docs",
      prompt: "What is the secret ingredient of the Harbor Bakery sourdough?",
      mode: "rag-nest",
      max_new_tokens: 48,
      documents: DOCUMENTS,
    });
    const res = await fetch(`${edge.url}/v1/batches`, {
      method: "POST",
      headers: { ...AUTH, "content-type": "application/x-ndjson" },
      body,
    });
    expect(res.status).toBe(201);
    const sub = (await res.json()) as SubmitResponse;
    const t0 = Date.now();
    let s: BatchStatus;
    for (;;) {
      s = (await (await fetch(`${edge.url}/v1/batches/${sub.id}`, { headers: AUTH })).json()) as BatchStatus;
      if (s.status === "completed" || Date.now() - t0 > 240_000) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(s.status).toBe("completed");
    const lines = (await (await fetch(`${edge.url}/v1/batches/${sub.id}/results`, { headers: AUTH })).text())
      .split("\n")
      .filter((l) => l !== "")
      .map((l) => JSON.parse(l) as BatchResultLine);
    const ok = lines[0]!;
    expect(ok.status).toBe("done");
    if (ok.status !== "done") return;
    expect(ok.text).toContain("smoked cardamom");
    expect(ok.citations.some((c) => c.document_index === 1 && c.document_id === "bakery")).toBe(true);
    for (const c of ok.citations) {
      const doc = DOCUMENTS[c.document_index!]!;
      expect(doc.text.slice(c.start, c.end)).toBe(c.cited_text);
      expect(c.document_title).toBe(doc.title);
    }
  }, 300_000);
});
