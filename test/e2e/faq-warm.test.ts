/**
 * `POST /v1/faq/warm` end to end (issue 5 §2): the real gpu-worker with its batch service (BullMQ on
 * the real Redis, 127.0.0.1:6379 or NEST_REDIS_URL, random key prefix deleted afterwards) behind the
 * Node edge with the Redis FAQ cache; two questions are warmed through the batch queue, then asking
 * one of them (other case and punctuation) is served from the cache.
 */
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Redis } from "ioredis";
import { startEdge, type RunningEdge } from "@nest/edge/adapters/node/server";
import { readGenerateEvents } from "@nest/edge/route/read-sse";
import { startWorker } from "@nest/gpu-worker/server";
import { hashApiKey } from "@nest/cli/api-key";
import { findModelDir } from "@nest/gpu-worker/runtime/prepare-model";
import { DEFAULT_CORPUS, findCorpusDir } from "@nest/corpus/layout";
import type { GenerateEvent } from "@nest/shared/protocol/events";

const REDIS_URL = process.env.NEST_REDIS_URL || "redis://127.0.0.1:6379";
const PREFIX = `nest-test-${randomBytes(4).toString("hex")}`;
const ADMIN = "faq-warm-admin-key";
const SECRET = randomBytes(24).toString("base64url");
const RUN = randomBytes(3).toString("hex"); // fresh cache keys per run
const QUESTIONS = [`What is the capital of Australia? (${RUN})`, `What is the capital of Nepal? (${RUN})`];
const PARAMS = { mode: "nest", max_new_tokens: 6, passages: 8 };

let worker: { url: string; close(): Promise<void> };
let edge: RunningEdge;
let warmId: string | undefined;

beforeAll(async () => {
  const corpusDirs = { [DEFAULT_CORPUS]: await findCorpusDir(DEFAULT_CORPUS) };
  worker = await startWorker({
    port: 0,
    modelDir: await findModelDir(),
    corpusDirs,
    secret: SECRET,
    batch: { redisUrl: REDIS_URL, prefix: PREFIX },
  });
  edge = await startEdge({
    port: 0,
    poolUrl: worker.url,
    poolSecret: SECRET,
    corpusDirs,
    apiKeyHashes: [hashApiKey(ADMIN)],
    redisUrl: REDIS_URL,
    faqTtlS: 300,
    healthCheckMs: 0,
  });
});

afterAll(async () => {
  await edge?.close();
  await worker?.close();
  const redis = new Redis(REDIS_URL);
  const keys = await redis.keys(`${PREFIX}:*`);
  if (keys.length) await redis.del(...keys);
  if (warmId) await redis.del(`nest:faqwarm:${warmId}`); // the edge's record of the warm batch (FAQ entries expire in 300 s)
  await redis.quit();
});

function call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${edge.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json", ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

describe("POST /v1/faq/warm", () => {
  it("400 names the field of a bad body", async () => {
    const res = await call("POST", "/v1/faq/warm", { questions: [] });
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({
      error: { code: "invalid_request", message: "field `questions`: Too small: expected array to have >=1 items" },
    });
  });

  it("warms two questions through the batch queue; asking one of them is then a cache hit with the batch's answer", async () => {
    const submitted = await call("POST", "/v1/faq/warm", { questions: QUESTIONS, ...PARAMS });
    expect(submitted.status).toBe(202);
    const { batch_id, questions } = (await submitted.json()) as { batch_id: string; questions: number };
    expect(batch_id).toMatch(/^batch_[0-9a-f]{24}$/);
    expect(questions).toBe(2);
    warmId = batch_id;

    let state = { batch_id, status: "", cached: 0, failed: 0 };
    const t0 = Date.now();
    while (state.status !== "completed" && Date.now() - t0 < 100_000) {
      const res = await call("GET", `/v1/faq/warm/${batch_id}`);
      expect(res.status).toBe(200);
      state = (await res.json()) as typeof state;
      if (state.status !== "completed") await new Promise((r) => setTimeout(r, 250));
    }
    expect(state).toEqual({ batch_id, status: "completed", cached: 2, failed: 0 });

    // the batch's own answer for question 1
    const results = await call("GET", `/v1/batches/${batch_id}/results`);
    const lines = (await results.text())
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { custom_id: string; status: string; text: string });
    expect(lines.map((l) => [l.custom_id, l.status])).toEqual([
      ["0", "done"],
      ["1", "done"],
    ]);

    // same question up to case and punctuation, same parameters → served from the cache
    const res = await call("POST", "/v1/generate", { prompt: `  ${QUESTIONS[1]!.toUpperCase().replace("?", "!")}`, ...PARAMS });
    expect(res.status).toBe(200);
    expect(res.headers.get("x-nest-cache")).toBe("hit");
    const events: GenerateEvent[] = [];
    for await (const ev of readGenerateEvents(res.body!)) events.push(ev);
    expect(events.map((e) => e.event)[0]).toBe("retrieval");
    expect(events.at(-1)!.event).toBe("done");
    const text = events.flatMap((e) => (e.event === "delta" ? [e.data.text] : [])).join("");
    expect(text).toBe(lines[1]!.text);
    expect(text.length).toBeGreaterThan(0);

    // other parameters are another cache key: a miss (stream read to the end)
    const other = await call(
      "POST",
      "/v1/generate",
      { prompt: QUESTIONS[1], ...PARAMS, max_new_tokens: 5 },
      { accept: "application/json" },
    );
    expect(other.headers.get("x-nest-cache")).toBe("miss");
    await other.json();
  });
});
