/**
 * Issue 14 §7–§10, over HTTP against `nestlm serve`: input the API refuses (415, blank prompts,
 * 405 + Allow, JSON 431, `invalid_json`, `missing_api_key`), lone surrogates never echoed, SSE
 * headers for proxies and a client's `Connection: close`, the FAQ replay's `retrieval.query`,
 * `Cache-Control: no-cache` on generation requests, and OpenAI `stop` refused with `param: "stop"`.
 */
import { request } from "node:http";
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startServe, type Serve } from "./hardening-stack.ts";

const KEY = "h14-input-key";
let serve: Serve;
const auth = { authorization: `Bearer ${KEY}` };
const cheap = { mode: "base", max_new_tokens: 2 };

async function post(path: string, body: string, headers: Record<string, string> = { ...auth, "content-type": "application/json" }) {
  const res = await fetch(`${serve.edgeUrl}${path}`, { method: "POST", headers, body });
  const text = await res.text();
  // biome-ignore lint/suspicious/noExplicitAny: response bodies of many shapes, checked field by field
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { res, status: res.status, json, text };
}

beforeAll(async () => {
  serve = await startServe({ staticKey: KEY });
}, 180_000);

afterAll(async () => {
  await serve?.stop();
});

describe("input the API refuses (§7)", () => {
  it("415 for a JSON body sent as text/plain or without Content-Type", async () => {
    const body = JSON.stringify({ prompt: "What is the capital of Australia?", ...cheap });
    const plain = await post("/v1/generate", body, { ...auth, "content-type": "text/plain" });
    expect(plain.status).toBe(415);
    expect(plain.json).toEqual({
      error: { code: "unsupported_media_type", message: "Content-Type `text/plain`: send `application/json`" },
    });
    const none = await fetch(`${serve.edgeUrl}/v1/generate`, { method: "POST", headers: auth, body: new TextEncoder().encode(body) });
    expect(none.status).toBe(415);
    const chat = await post("/v1/chat/completions", JSON.stringify({ model: "nest", messages: [{ role: "user", content: "hi" }] }), {
      ...auth,
      "content-type": "text/plain",
    });
    expect(chat.status).toBe(415);
  });

  it("400 for a whitespace-only prompt or user message", async () => {
    const r = await post("/v1/generate", JSON.stringify({ prompt: " \n\t ", ...cheap }));
    expect(r.status).toBe(400);
    expect(r.json).toEqual({ error: { code: "invalid_request", message: "field `prompt`: must not be blank (whitespace only)" } });
    const m = await post("/v1/generate", JSON.stringify({ messages: [{ role: "user", content: "   " }], ...cheap }));
    expect(m.status).toBe(400);
    expect(m.json.error.message).toBe("field `messages.0.content`: must not be blank (whitespace only)");
  });

  it("replaces lone surrogates in the echoed query", async () => {
    const r = await post("/v1/generate", JSON.stringify({ prompt: "What is the capital of Australia?\uD800 x\uDC00", ...cheap }), {
      ...auth,
      "content-type": "application/json",
      accept: "application/json",
      "cache-control": "no-store",
    });
    expect(r.status).toBe(200);
    expect(r.json.retrieval.query).toBe("What is the capital of Australia?\uFFFD x\uFFFD");
    expect(r.text).not.toMatch(/\\ud[89a-f][0-9a-f]{2}/i);
  });

  it("405 with Allow for a known path and a wrong method; OPTIONS answers Allow", async () => {
    const get = await fetch(`${serve.edgeUrl}/v1/generate`, { headers: auth });
    expect(get.status).toBe(405);
    expect(get.headers.get("allow")).toBe("OPTIONS, POST");
    expect(await get.json()).toEqual({
      error: { code: "method_not_allowed", message: "GET is not allowed on /v1/generate; allowed: OPTIONS, POST" },
    });
    const del = await fetch(`${serve.edgeUrl}/v1/batches/batch_${"0".repeat(24)}`, { method: "DELETE", headers: auth });
    expect(del.status).toBe(405);
    expect(del.headers.get("allow")).toBe("GET, HEAD, OPTIONS");
    const put = await fetch(`${serve.edgeUrl}/healthz`, { method: "PUT" });
    expect(put.status).toBe(405);
    const options = await fetch(`${serve.edgeUrl}/v1/chat/completions`, { method: "OPTIONS" });
    expect(options.status).toBe(204);
    expect(options.headers.get("allow")).toBe("OPTIONS, POST");
    expect(options.headers.get("access-control-allow-origin")).toBeNull();
    const unknown = await fetch(`${serve.edgeUrl}/v1/nothing`, { method: "POST", headers: auth });
    expect(unknown.status).toBe(404);
  });

  it("answers a 20 KB header with a JSON 431", async () => {
    const res = await fetch(`${serve.edgeUrl}/healthz`, { headers: { "x-big": "a".repeat(20 * 1024) } });
    expect(res.status).toBe(431);
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(await res.json()).toEqual({
      error: { code: "headers_too_large", message: "request headers exceed the server's limit (16 KiB in all)" },
    });
  });

  it("gives malformed JSON and a missing key their own codes", async () => {
    const bad = await post("/v1/generate", "{prompt:");
    expect(bad.status).toBe(400);
    expect(bad.json).toEqual({ error: { code: "invalid_json", message: "request body is not valid JSON" } });
    const noKey = await post("/v1/generate", JSON.stringify({ prompt: "hi" }), { "content-type": "application/json" });
    expect(noKey.status).toBe(401);
    expect(noKey.json.error.code).toBe("missing_api_key");
    expect(noKey.res.headers.get("www-authenticate")).toMatch(/^Bearer/);
  });
});

describe("streaming behind proxies (§8)", () => {
  it("sends no-transform and X-Accel-Buffering, and honours Connection: close", async () => {
    const body = JSON.stringify({ prompt: "What is the capital of Australia?", ...cheap });
    const got = await new Promise<{ headers: Record<string, string | string[] | undefined>; text: string; closed: boolean }>(
      (resolve, reject) => {
        const req = request(
          `${serve.edgeUrl}/v1/generate`,
          {
            method: "POST",
            agent: false,
            headers: {
              ...auth,
              "content-type": "application/json",
              "cache-control": "no-store",
              connection: "close",
              "content-length": Buffer.byteLength(body),
            },
          },
          (res) => {
            let text = "";
            res.on("data", (d) => (text += String(d)));
            res.on("end", () => {
              // The server closes the socket after a `Connection: close` exchange.
              const sock = res.socket;
              if (!sock || sock.destroyed) resolve({ headers: res.headers, text, closed: true });
              else sock.once("close", () => resolve({ headers: res.headers, text, closed: true }));
            });
          },
        );
        req.on("error", reject);
        req.end(body);
      },
    );
    expect(got.headers["content-type"]).toBe("text/event-stream");
    expect(got.headers["cache-control"]).toBe("no-cache, no-transform");
    expect(got.headers["x-accel-buffering"]).toBe("no");
    expect(got.headers.connection).toBe("close");
    expect(got.text).toContain("event: done");
    expect(got.closed).toBe(true);
  }, 60_000);
});

describe("FAQ cache (§9, §10) and OpenAI stop (§9)", () => {
  const tag = `zq${randomBytes(3).toString("hex")}`;
  const ask = (prompt: string, headers: Record<string, string> = {}) =>
    post("/v1/generate", JSON.stringify({ prompt, ...cheap }), {
      ...auth,
      "content-type": "application/json",
      accept: "application/json",
      ...headers,
    });

  it("replays a cached answer with the current asker's query, and no-cache bypasses it", async () => {
    const first = await ask(`What is the capital of Australia? ${tag}`);
    expect(first.status).toBe(200);
    expect(first.res.headers.get("x-nest-cache")).toBe("miss");
    const second = await ask(`  what is the CAPITAL of australia?? ${tag.toUpperCase()} `);
    expect(second.res.headers.get("x-nest-cache")).toBe("hit");
    expect(second.json.retrieval.query).toBe(`  what is the CAPITAL of australia?? ${tag.toUpperCase()} `);
    expect(second.json.text).toBe(first.json.text);
    const fresh = await ask(`What is the capital of Australia? ${tag}`, { "cache-control": "no-cache" });
    expect(fresh.status).toBe(200);
    expect(fresh.res.headers.get("x-nest-cache")).toBe("miss");
  }, 120_000);

  it("refuses a stop sequence with param `stop`, accepts stop: null", async () => {
    const body = (stop: unknown) =>
      JSON.stringify({
        model: "nest",
        messages: [{ role: "user", content: "What is the capital of Australia?" }],
        max_tokens: 2,
        stop,
        nest: { mode: "base" },
      });
    const refused = await post("/v1/chat/completions", body(["\n"]));
    expect(refused.status).toBe(400);
    expect(refused.json.error).toMatchObject({ param: "stop", code: "invalid_request", type: "invalid_request_error" });
    const ok = await post("/v1/chat/completions", body(null));
    expect(ok.status).toBe(200);
    expect(ok.json.object).toBe("chat.completion");
  }, 60_000);
});
