/**
 * The FAQ warm routes on the edge alone: a stand-in for the pool's job API (the outside service;
 * the real one runs end to end in test/e2e/faq-warm.test.ts) answers the batch and its result
 * lines; the edge stores each answer under the key a live `/v1/generate` uses, with the
 * `retrieval` event of the generation pipeline, so the live request is then a cache hit.
 */
import { describe, expect, it } from "vitest";
import { createApp } from "@nest/edge/app";
import { sha256Hex } from "@nest/edge/middleware/auth";
import { FaqCache } from "@nest/edge/cache/faq-cache";
import { memoryKv } from "@nest/edge/store/kv";
import { readGenerateEvents } from "@nest/edge/route/read-sse";
import { DocumentIndex } from "@nest/shared/retrieve/documents";
import { NestError } from "@nest/shared/protocol/errors";
import type { GenerateEvent } from "@nest/shared/protocol/events";

const KEY = "faq-admin-key";
const BATCH = `batch_${"0123456789ab".repeat(2)}`;
const DOCS = [
  { title: "Australia", text: "Canberra is the capital of Australia. It was chosen as a compromise between Sydney and Melbourne." },
  { title: "Nepal", text: "Kathmandu is the capital of Nepal, in a valley of the Himalayas." },
];
const QUESTION = "What is the capital of Nepal?";
const ANSWER = "Kathmandu is the capital.";
/** The finished item's `done` fields, as the batch consumer writes them. */
const DONE = {
  finish_reason: "stop",
  mode: "nest",
  model: "tiny",
  usage: {
    prompt_tokens: 30,
    completion_tokens: 6,
    lm_forward_passes: 4,
    drafted_tokens: 3,
    accepted_tokens: 2,
    num_drafts: 1,
    attributed_tokens: 0,
    attribution_ratio: 0,
    cited_tokens: 0,
    cited_ratio: 0,
    copied_tokens: 0,
    copied_ratio: 0,
    citations: 0,
    single_token_citations: 0,
    store_passages: 2,
    store_keys: 40,
  },
  timings_ms: { retrieval: 1.5, encoding: 10, knn: 0.5, lm: 25, total: 40 },
};

/** The job API: accepts the batch, then answers one finished line per submitted item. */
function fakeJobApi() {
  const submitted: string[] = [];
  const fetchFn = (async (input: string | URL | Request, init?: RequestInit) => {
    const url = new URL(String(input));
    if (init?.method === "POST" && url.pathname === "/v1/batches") {
      submitted.push(...String(init.body).split("\n"));
      return Response.json({ id: BATCH }, { status: 202 });
    }
    if (url.pathname === `/v1/batches/${BATCH}/results`) {
      const lines = submitted.map((_, i) => JSON.stringify({ custom_id: String(i), status: "done", text: ANSWER, citations: [], ...DONE }));
      return new Response(lines.join("\n"), { headers: { "x-batch-status": "completed" } });
    }
    return Response.json({ error: { code: "not_found", message: url.pathname } }, { status: 404 });
  }) as typeof fetch;
  return { fetchFn, submitted };
}

async function app() {
  const api = fakeJobApi();
  const corpus = new DocumentIndex(DOCS); // a real index standing in for the `factbook` corpus
  const a = createApp({
    apiKeyHashes: [await sha256Hex(KEY)],
    pool: {
      decode: async () => {
        throw new NestError("upstream_unavailable", "the pool must not be asked: the answer is cached");
      },
      modelName: async () => "tiny",
    },
    indexFor: async (name) => (name === "factbook" ? corpus : undefined),
    corpusVersion: async (name) => (name === "factbook" ? "v1" : undefined),
    faqCache: new FaqCache(memoryKv(), 300),
    batchPoolUrl: "http://pool.test",
    batchFetch: api.fetchFn,
  });
  return { app: a, api };
}

const headers = { authorization: `Bearer ${KEY}`, "content-type": "application/json" };

async function warm(a: Awaited<ReturnType<typeof app>>["app"], body: object) {
  const res = await a.request("/v1/faq/warm", { method: "POST", headers, body: JSON.stringify(body) });
  expect(res.status).toBe(202);
  expect(await res.json()).toEqual({ batch_id: BATCH, questions: 1 });
  const done = await a.request(`/v1/faq/warm/${BATCH}`, { headers });
  expect(done.status).toBe(200);
  return done.json();
}

async function ask(a: Awaited<ReturnType<typeof app>>["app"], body: object) {
  const res = await a.request("/v1/generate", { method: "POST", headers, body: JSON.stringify(body) });
  expect(res.status).toBe(200);
  const events: GenerateEvent[] = [];
  for await (const ev of readGenerateEvents(res.body!)) events.push(ev);
  return { cache: res.headers.get("x-nest-cache"), events };
}

describe("FAQ warm routes", () => {
  it("caches a corpus answer under the live request's key, with the pipeline's retrieval event", async () => {
    const { app: a, api } = await app();
    expect(await warm(a, { questions: [QUESTION], passages: 2 })).toEqual({ batch_id: BATCH, status: "completed", cached: 1, failed: 0 });
    expect(JSON.parse(api.submitted[0]!)).toMatchObject({ custom_id: "0", prompt: QUESTION, passages: 2 });

    const { cache, events } = await ask(a, { prompt: QUESTION, passages: 2 });
    expect(cache).toBe("hit");
    expect(events.map((e) => e.event)).toEqual(["retrieval", "delta", "done"]);
    const retrieval = events[0]!.data as { query: string; corpus: string; passages: { title: string; text?: string; rank: number }[] };
    expect(retrieval.query).toBe(QUESTION);
    expect(retrieval.corpus).toBe("factbook");
    expect(retrieval.passages.map((p) => [p.rank, p.title])).toEqual([
      [1, "Nepal"],
      [2, "Australia"],
    ]);
    expect(retrieval.passages[0]!.text).toContain("Kathmandu");
    expect(events[1]!.data).toEqual({ text: ANSWER, tokens: 0 });
    expect(events[2]!.data).toMatchObject(DONE); // the batch's usage and timings, as they were
  });

  it("caches an answer over the request's documents under the key a live request with them uses", async () => {
    const { app: a } = await app();
    expect(await warm(a, { questions: [QUESTION], documents: DOCS, passages: 1 })).toMatchObject({ cached: 1, failed: 0 });
    const { cache, events } = await ask(a, { prompt: QUESTION, documents: DOCS, passages: 1 });
    expect(cache).toBe("hit");
    const retrieval = events[0]!.data as { corpus: string; passages: { title: string; document?: { index: number } }[] };
    expect(retrieval.corpus).toBe("@documents");
    expect(retrieval.passages.map((p) => [p.title, p.document?.index])).toEqual([["Nepal", 1]]);
  });

  it("refuses at submission a corpus the edge does not know (404, as /v1/generate), submitting nothing", async () => {
    const { app: a, api } = await app();
    const res = await a.request("/v1/faq/warm", {
      method: "POST",
      headers,
      body: JSON.stringify({ questions: [QUESTION], corpus: "elsewhere" }),
    });
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ error: { code: "not_found", message: "unknown corpus `elsewhere`" } });
    expect(api.submitted).toEqual([]);
  });

  it("refuses `prompt` and `messages` beside the questions, and names the question a bad prompt is", async () => {
    const { app: a, api } = await app();
    const post = async (body: object) => {
      const res = await a.request("/v1/faq/warm", { method: "POST", headers, body: JSON.stringify(body) });
      return [res.status, await res.json()];
    };
    expect(await post({ questions: [QUESTION], prompt: "b" })).toEqual([
      400,
      { error: { code: "invalid_request", message: "field `prompt`: not allowed here; each of `questions` is a prompt" } },
    ]);
    expect(await post({ questions: [QUESTION], messages: [] })).toEqual([
      400,
      { error: { code: "invalid_request", message: "field `messages`: not allowed here; each of `questions` is a prompt" } },
    ]);
    const [status, body] = await post({ questions: [QUESTION, "   "] });
    expect(status).toBe(400);
    expect((body as { error: { message: string } }).error.message).toMatch(/^field `questions\.1`: /);
    expect(api.submitted).toEqual([]);
  });
});
