/**
 * The edge's Worker (`edge/src/adapters/workers.ts`, per `wrangler.toml`) inside workerd: routes,
 * validation, API keys from the `NEST_KEYS` KV namespace, quotas, and generation through the real
 * gpu-worker started by `pool-setup.ts` with the FAQ cache in the `NEST_CACHE` namespace. Every
 * response body is consumed.
 */
import { env, exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { sha256Hex } from "@nest/edge/middleware/auth";
import { putKeyRecord } from "@nest/edge/keys/keys";
import { workersKv } from "@nest/edge/adapters/workers-kv";

const STATIC_KEY = "workerd-static-key";
const BASE = "https://edge.test";

function post(path: string, body: unknown, key?: string, headers: Record<string, string> = {}): Promise<Response> {
  return exports.default.fetch(`${BASE}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(key ? { authorization: `Bearer ${key}` } : {}), ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

/** Stores a key record in the Worker's `NEST_KEYS` namespace; returns the key. */
async function kvKey(name: string, scopes: ("generate" | "batch" | "admin")[], tokensPerDay = 0): Promise<{ key: string; hash: string }> {
  const key = `workerd-${name}-${crypto.randomUUID()}`;
  const hash = await sha256Hex(key);
  await putKeyRecord(workersKv(env.NEST_KEYS), {
    hash,
    name,
    scopes,
    rpm: 0,
    tokens_per_day: tokensPerDay,
    created_at: "2026-01-01T00:00:00.000Z",
  });
  return { key, hash };
}

describe("routes without a pool call", () => {
  it("GET /healthz answers ok", async () => {
    const res = await exports.default.fetch(`${BASE}/healthz`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: "ok" });
  });

  it("GET / serves the playground page with its CSP", async () => {
    const res = await exports.default.fetch(`${BASE}/`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/html; charset=utf-8");
    expect(res.headers.get("content-security-policy")).toContain("default-src");
    expect(await res.text()).toContain("<title>nest playground</title>");
  });

  it("401 without a key, with WWW-Authenticate", async () => {
    const res = await post("/v1/generate", { prompt: "hi" });
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toBe('Bearer realm="nest"');
    expect(await res.json()).toEqual({
      error: { code: "missing_api_key", message: "missing API key: send `Authorization: Bearer <key>`" },
    });
  });

  it("400 naming the field for a bad /v1/generate body", async () => {
    const res = await post("/v1/generate", { prompt: "hi", max_new_tokens: 0 }, STATIC_KEY);
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({
      error: { code: "invalid_request", message: "field `max_new_tokens`: Too small: expected number to be >0" },
    });
  });

  it("400 in OpenAI's error shape on /v1/chat/completions (n: 2)", async () => {
    const res = await post("/v1/chat/completions", { model: "nest", messages: [{ role: "user", content: "hi" }], n: 2 }, STATIC_KEY);
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({
      error: { message: "field `n`: Invalid input: expected 1", type: "invalid_request_error", param: "n", code: "invalid_request" },
    });
  });

  it("413 for a body over 64 KiB", async () => {
    const res = await post("/v1/generate", { prompt: "x".repeat(70_000) }, STATIC_KEY);
    expect(res.status).toBe(413);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("payload_too_large");
  });
});

describe("API keys in the NEST_KEYS KV namespace", () => {
  it("an unknown key is 401; a generate-only key passes /v1/generate's auth (400) but gets 403 on /v1/faq/warm", async () => {
    const unknown = await post("/v1/generate", { prompt: "hi" }, "workerd-no-such-key");
    expect(unknown.status).toBe(401);
    expect(await unknown.json()).toEqual({ error: { code: "unauthorized", message: "invalid API key" } });
    const { key } = await kvKey("kv-gen", ["generate"]);
    const bad = await post("/v1/generate", { prompt: "" }, key);
    expect(bad.status).toBe(400);
    await bad.body?.cancel();
    const forbidden = await post("/v1/faq/warm", { questions: ["hi"] }, key);
    expect(forbidden.status).toBe(403);
    expect(await forbidden.json()).toEqual({ error: { code: "forbidden", message: "API key `kv-gen` lacks scope `admin`" } });
  });

  it("a used-up daily token quota is 429 with Retry-After = seconds to UTC midnight", async () => {
    const { key, hash } = await kvKey("kv-quota", ["generate"], 10);
    const now = Date.now();
    const day = Math.floor(now / 86_400_000);
    await env.NEST_KEYS.put(`tok:${hash}:${day}`, "10");
    const res = await post("/v1/generate", { prompt: "hi" }, key);
    expect(res.status).toBe(429);
    const retry = Number(res.headers.get("retry-after"));
    const left = Math.ceil(((day + 1) * 86_400_000 - now) / 1000);
    expect(retry).toBeGreaterThanOrEqual(left - 5);
    expect(retry).toBeLessThanOrEqual(left);
    expect(await res.json()).toEqual({ error: { code: "rate_limited", message: "daily token quota of 10 tokens used up" } });
  });
});

describe("generation through the real gpu-worker pool", () => {
  it("a JSON answer misses the FAQ cache, the same question (case, punctuation) then hits with the same text", async () => {
    const q = `What is the capital of Australia? ${crypto.randomUUID().slice(0, 8)}`;
    const body = { prompt: q, mode: "nest", max_new_tokens: 12 };
    const first = await post("/v1/generate", body, STATIC_KEY, { accept: "application/json" });
    expect(first.status).toBe(200);
    expect(first.headers.get("x-nest-cache")).toBe("miss");
    const a = (await first.json()) as { text: string; done: { finish_reason: string; usage: { completion_tokens: number } } };
    expect(a.done.usage.completion_tokens).toBeGreaterThan(0);
    expect(a.text).toContain("Canberra");
    const second = await post("/v1/generate", { ...body, prompt: ` ${q.toUpperCase().replace("?", "!!")}` }, STATIC_KEY, {
      accept: "application/json",
    });
    expect(second.status).toBe(200);
    expect(second.headers.get("x-nest-cache")).toBe("hit");
    const b = (await second.json()) as { text: string };
    expect(b.text).toBe(a.text);
  });

  it("/v1/chat/completions streams OpenAI chunks ending in data: [DONE]", async () => {
    const res = await post(
      "/v1/chat/completions",
      {
        model: "nest",
        messages: [{ role: "user", content: "What is the capital of Australia?" }],
        max_tokens: 12,
        stream: true,
        stream_options: { include_usage: true },
      },
      STATIC_KEY,
    );
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("text/event-stream");
    const datas = (await res.text())
      .split("\n")
      .filter((l) => l.startsWith("data: "))
      .map((l) => l.slice(6));
    expect(datas.at(-1)).toBe("[DONE]");
    const chunks = datas.slice(0, -1).map(
      (d) =>
        JSON.parse(d) as {
          object: string;
          choices: { delta?: { content?: string }; finish_reason: string | null }[];
          usage?: { completion_tokens: number };
        },
    );
    expect(chunks.every((c) => c.object === "chat.completion.chunk")).toBe(true);
    const text = chunks.map((c) => c.choices[0]?.delta?.content ?? "").join("");
    expect(text).toContain("Canberra");
    expect(chunks.at(-1)!.choices).toEqual([]);
    expect(chunks.at(-1)!.usage!.completion_tokens).toBeGreaterThan(0);
  });
});
