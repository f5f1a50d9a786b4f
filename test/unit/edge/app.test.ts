import { createServer } from "node:net";
import { beforeAll, describe, expect, it } from "vitest";
import { createApp } from "@nest/edge/app";
import { sha256Hex } from "@nest/edge/middleware/auth";
import { createPoolClient } from "@nest/edge/route/pool-client";
import { createPoolIndex } from "@nest/edge/retrieve/pool-index";

const KEY = "test-key-123";

/** A port on 127.0.0.1 that nothing listens on (bound, then released). */
async function deadPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

let app: ReturnType<typeof createApp>;
const logs: string[] = [];

beforeAll(async () => {
  // An edge configured like the Workers build, whose pool is down: auth, validation, routing and the
  // error paths all run for real; nothing reaches a model.
  const poolUrl = `http://127.0.0.1:${await deadPort()}`;
  app = createApp({
    apiKeyHashes: [await sha256Hex(KEY)],
    pool: createPoolClient(poolUrl),
    indexFor: async (corpus) => (corpus === "factbook" ? createPoolIndex(poolUrl, corpus) : undefined),
    log: (line) => logs.push(line),
  });
});

function post(body: string, headers: Record<string, string> = { authorization: `Bearer ${KEY}` }) {
  return app.request("/v1/generate", { method: "POST", headers: { "content-type": "application/json", ...headers }, body });
}

describe("sha256Hex", () => {
  it("hashes like SHA-256 (FIPS 180-2 test vector `abc`)", async () => {
    expect(await sha256Hex("abc")).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  });
});

describe("createApp", () => {
  it("GET /healthz answers ok", async () => {
    const res = await app.request("/healthz");
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: "ok" });
  });

  it("401 without a key", async () => {
    const res = await post(JSON.stringify({ prompt: "hi" }), {});
    expect(res.status).toBe(401);
    expect(res.headers.get("content-type")).toMatch(/application\/json/);
    expect(res.headers.get("www-authenticate")).toMatch(/^Bearer/);
    expect(await res.json()).toEqual({
      error: { code: "missing_api_key", message: "missing API key: send `Authorization: Bearer <key>`" },
    });
  });

  it("401 with a wrong key, and with a non-bearer header", async () => {
    const bad = await post(JSON.stringify({ prompt: "hi" }), { authorization: "Bearer test-key-124" });
    expect(bad.status).toBe(401);
    expect(await bad.json()).toEqual({ error: { code: "unauthorized", message: "invalid API key" } });
    const basic = await post(JSON.stringify({ prompt: "hi" }), { authorization: `Basic ${KEY}` });
    expect(basic.status).toBe(401);
    expect(((await basic.json()) as { error: { code: string } }).error.code).toBe("unauthorized");
  });

  it("400 for a body that is not JSON", async () => {
    const res = await post("{prompt:");
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ error: { code: "invalid_json", message: "request body is not valid JSON" } });
  });

  it("400 naming `prompt` when neither or both of prompt/messages are given", async () => {
    for (const body of [{ mode: "nest" }, { prompt: "hi", messages: [{ role: "user", content: "hi" }] }]) {
      const res = await post(JSON.stringify(body));
      expect(res.status).toBe(400);
      expect(await res.json()).toEqual({
        error: { code: "invalid_request", message: "field `prompt`: give exactly one of `prompt` or `messages`" },
      });
    }
  });

  it("400 naming `gamma` when it is out of (0, 1]", async () => {
    const res = await post(JSON.stringify({ prompt: "hi", gamma: 1.5 }));
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({
      error: { code: "invalid_request", message: "field `gamma`: Too big: expected number to be <=1" },
    });
  });

  it("400 naming an unknown field", async () => {
    const res = await post(JSON.stringify({ prompt: "hi", temperature: 0.2 }));
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ error: { code: "invalid_request", message: "unknown field `temperature`" } });
  });

  it("413 for a body over 64 KiB", async () => {
    const res = await post(JSON.stringify({ prompt: "x".repeat(64 * 1024) }));
    expect(res.status).toBe(413);
    expect(await res.json()).toEqual({
      error: {
        code: "payload_too_large",
        message: "request body exceeds 65536 bytes (up to 1265536 are accepted for requests that carry `documents`)",
      },
    });
    // With documents the limit is MAX_DOCUMENTS_BODY_BYTES (issue 15): the same size passes the limit (and is validated).
    const withDocs = await post(JSON.stringify({ prompt: "x".repeat(64 * 1024), documents: [{ text: "d" }] }));
    expect(withDocs.status).toBe(400);
    expect(((await withDocs.json()) as { error: { message: string } }).error.message).toMatch(/^field `prompt`/);
  });

  it("404 JSON for unknown routes; 405 with Allow for a known path and another method", async () => {
    const res = await app.request("/v2/nothing");
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ error: { code: "not_found", message: "no route for GET /v2/nothing" } });
    const get = await app.request("/v1/generate");
    expect(get.status).toBe(405);
    expect(get.headers.get("allow")).toBe("OPTIONS, POST");
    expect(await get.json()).toEqual({
      error: { code: "method_not_allowed", message: "GET is not allowed on /v1/generate; allowed: OPTIONS, POST" },
    });
  });

  it("the OpenAI-compatible routes answer 405 and 415 in OpenAI's error shape, typed as client errors", async () => {
    const get = await app.request("/v1/chat/completions");
    expect(get.status).toBe(405);
    expect(await get.json()).toEqual({
      error: {
        message: "GET is not allowed on /v1/chat/completions; allowed: OPTIONS, POST",
        type: "invalid_request_error",
        param: null,
        code: "method_not_allowed",
      },
    });
    const text = await app.request("/v1/chat/completions", {
      method: "POST",
      headers: { authorization: `Bearer ${KEY}`, "content-type": "text/plain" },
      body: "hi",
    });
    expect(text.status).toBe(415);
    expect(((await text.json()) as { error: { type: string; code: string } }).error).toMatchObject({
      type: "invalid_request_error",
      code: "unsupported_media_type",
    });
  });

  it("404 JSON for an unknown corpus", async () => {
    const res = await post(JSON.stringify({ prompt: "hi", corpus: "nope" }));
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ error: { code: "not_found", message: "unknown corpus `nope`" } });
  });

  it("502 JSON when retrieval cannot reach the pool", async () => {
    const res = await post(JSON.stringify({ prompt: "hi", mode: "nest" }));
    expect(res.status).toBe(502);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("upstream_unavailable");
  });

  it("mode base with the pool down: 502 JSON upstream_unavailable before any stream", async () => {
    const res = await post(JSON.stringify({ prompt: "What is the capital of Australia?", mode: "base" }));
    expect(res.status).toBe(502);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    const err = (await res.json()) as { error: { code: string; message: string } };
    expect(err.error.code).toBe("upstream_unavailable");
    expect(err.error.message).toMatch(/^gpu-worker pool unreachable at http:\/\/127\.0\.0\.1:\d+/);
  });

  it("never logs the key", async () => {
    expect(logs.length).toBeGreaterThan(0);
    expect(logs.some((l) => l.includes(KEY))).toBe(false);
  });
});
