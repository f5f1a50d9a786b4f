/**
 * Issue 5 end to end over real HTTP: the real gpu-worker (HMAC secret on) behind the Node edge with
 * a key file, Redis FAQ cache and pool router; the official `openai` client pointed at it.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startEdge, type RunningEdge } from "@nest/edge/adapters/node/server";
import { readGenerateEvents } from "@nest/edge/route/read-sse";
import { startWorker } from "@nest/gpu-worker/server";
import { createKey } from "@nest/cli/keys";
import { hashApiKey } from "@nest/cli/api-key";
import { prepareModel } from "@nest/gpu-worker/runtime/prepare-model";
import { prepareCorpus } from "@nest/corpus/prepare-corpus";
import type { GenerateEvent } from "@nest/shared/protocol/events";

const ADMIN = "e2e-admin-key";
const SECRET = "e2e-pool-secret";
const home = mkdtempSync(join(tmpdir(), "nest-edge-prod-"));
let worker: { url: string; close(): Promise<void> };
let edge: RunningEdge;
let limited: string;
let generateOnly: string;

beforeAll(async () => {
  const log = () => {};
  const modelDir = await prepareModel({ log });
  const corpusDir = (await prepareCorpus({ log })).dir;
  worker = await startWorker({ port: 0, modelDir, corpusDirs: { factbook: corpusDir }, secret: SECRET });
  limited = (await createKey(home, { name: "limited", scopes: ["generate"], rpm: 2, tokensPerDay: 0 })).key;
  generateOnly = (await createKey(home, { name: "gen", scopes: ["generate"], rpm: 0, tokensPerDay: 0 })).key;
  edge = await startEdge({
    port: 0,
    poolUrl: worker.url,
    poolSecret: SECRET,
    corpusDirs: { factbook: corpusDir },
    apiKeyHashes: [hashApiKey(ADMIN)],
    keysFile: join(home, "keys.json"),
    redisUrl: "redis://127.0.0.1:6379",
    heartbeatMs: 200,
  });
});

afterAll(async () => {
  await edge?.close();
  await worker?.close();
  rmSync(home, { recursive: true, force: true });
});

function generate(body: object, key = ADMIN, init: RequestInit = {}) {
  return fetch(`${edge.url}/v1/generate`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify(body),
    ...init,
  });
}
async function collect(res: Response): Promise<GenerateEvent[]> {
  const out: GenerateEvent[] = [];
  for await (const ev of readGenerateEvents(res.body!)) out.push(ev);
  return out;
}

describe("keys, scopes and limits", () => {
  it("401 without a key, 403 for a generate-only key on /v1/batches, 429 with Retry-After past 2/min", async () => {
    expect((await generate({ prompt: "hi" }, "nope")).status).toBe(401);
    const forbidden = await fetch(`${edge.url}/v1/batches`, {
      method: "POST",
      headers: { authorization: `Bearer ${generateOnly}` },
      body: "{}",
    });
    expect(forbidden.status).toBe(403);
    expect(await forbidden.json()).toEqual({ error: { code: "forbidden", message: "API key `gen` lacks scope `batch`" } });
    // two bad bodies still count against the minute limit (400), the third is refused before validation
    expect((await generate({ prompt: "" }, limited)).status).toBe(400);
    expect((await generate({ prompt: "" }, limited)).status).toBe(400);
    const third = await generate({ prompt: "" }, limited);
    expect(third.status).toBe(429);
    const retry = Number(third.headers.get("retry-after"));
    expect(retry).toBeGreaterThanOrEqual(1);
    expect(retry).toBeLessThanOrEqual(60);
    expect(((await third.json()) as { error: { code: string } }).error.code).toBe("rate_limited");
  });

  it("the worker refuses unsigned decode calls (401) but answers /healthz", async () => {
    const res = await fetch(`${worker.url}/v1/decode`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    expect(res.status).toBe(401);
    expect((await fetch(`${worker.url}/healthz`)).status).toBe(200);
  });
});

describe("FAQ cache", () => {
  const q = `What is the capital of Australia? ${Date.now()}`; // fresh key per run
  it("misses, then hits for the same question up to case, spacing and punctuation, replaying the same events", async () => {
    const first = await generate({ prompt: q, mode: "nest", max_new_tokens: 24 });
    expect(first.headers.get("x-nest-cache")).toBe("miss");
    const a = await collect(first);
    expect(a.at(-1)!.event).toBe("done");
    const asked = `  ${q.toUpperCase().replace("?", " ??")} `;
    const second = await generate({ prompt: asked, mode: "nest", max_new_tokens: 24 });
    expect(second.headers.get("x-nest-cache")).toBe("hit");
    const b = await collect(second);
    // The same events, except that the retrieval event echoes this asker's query (issue 14 §9).
    expect(b).toEqual(a.map((ev) => (ev.event === "retrieval" ? { ...ev, data: { ...ev.data, query: asked } } : ev)));
    // another decoding parameter is another key
    const other = await generate({ prompt: q, mode: "nest", max_new_tokens: 23 });
    expect(other.headers.get("x-nest-cache")).toBe("miss");
    await other.body?.cancel();
  });
});

describe("OpenAI-compatible routes with the official client", () => {
  const client = () => new OpenAI({ apiKey: ADMIN, baseURL: `${edge.url}/v1`, maxRetries: 0 });
  it("chat.completions.create, not streaming: Canberra, usage, NEST citations extension", async () => {
    const r = await client().chat.completions.create({
      model: "nest",
      messages: [{ role: "user", content: "What is the capital of Australia?" }],
      max_tokens: 32,
    });
    expect(r.object).toBe("chat.completion");
    expect(r.choices[0]!.message.content).toContain("Canberra");
    expect(r.usage!.total_tokens).toBe(r.usage!.prompt_tokens + r.usage!.completion_tokens);
    const nest = (r as unknown as { nest: { attribution_ratio: number | null; citations: unknown[] } }).nest;
    expect(Array.isArray(nest.citations)).toBe(true);
    expect(nest.attribution_ratio === null || (nest.attribution_ratio >= 0 && nest.attribution_ratio <= 1)).toBe(true);
  });

  it("streams chunks then a usage chunk (include_usage)", async () => {
    const stream = await client().chat.completions.create({
      model: "nest",
      messages: [{ role: "user", content: "What is the capital of Australia?" }],
      max_tokens: 32,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? "";
      finish = chunk.choices[0]?.finish_reason ?? finish;
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toContain("Canberra");
    expect(["stop", "length"]).toContain(finish);
    expect(usage!.completion_tokens).toBeGreaterThan(0);
  });

  it("completions.create and a 400 naming the field in OpenAI's error shape", async () => {
    const r = await client().completions.create({ model: "nest", prompt: "The capital of Australia is", max_tokens: 8 });
    expect(r.object).toBe("text_completion");
    expect(r.choices[0]!.text.length).toBeGreaterThan(0);
    const bad = await client()
      .chat.completions.create({ model: "nest", messages: [{ role: "user", content: "hi" }], n: 2 })
      .catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(OpenAI.BadRequestError);
    expect((bad as InstanceType<typeof OpenAI.BadRequestError>).param).toBe("n");
  });
});

describe("cancellation", () => {
  it("a client that disconnects frees the worker's slot within a second", async () => {
    const abort = new AbortController();
    const res = await generate(
      { prompt: "Describe the history of Australia in detail.", mode: "nest", max_new_tokens: 512, passages: 8 },
      ADMIN,
      { signal: abort.signal },
    );
    const reader = res.body!.getReader();
    const dec = new TextDecoder();
    let seen = "";
    while (!seen.includes("event: delta")) seen += dec.decode((await reader.read()).value);
    expect((await (await fetch(`${worker.url}/healthz`)).json()) as object).toMatchObject({ running: 1 });
    abort.abort();
    const t0 = Date.now();
    let load = { running: 1, queued: 0 };
    while (Date.now() - t0 < 1000) {
      load = (await (await fetch(`${worker.url}/healthz`)).json()) as typeof load;
      if (load.running === 0) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(load).toMatchObject({ running: 0, queued: 0 });
  });
});
