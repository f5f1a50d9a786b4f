/**
 * Issue 14 §2, over HTTP against the gpu-worker of `nestlm serve`: no unbounded work before
 * authentication. An unsigned POST is refused from its headers while its body is still being sent;
 * a request with plausible but false signature headers is cut off (413) once its streamed body
 * passes the cap, long before it ends; a correctly signed request is refused when replayed.
 */
import { request } from "node:http";
import { createHmac, randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startServe, type Serve } from "./hardening-stack.ts";

let serve: Serve;
/** What the client would send in all: 48 MiB (the cap on /v1/decode is 4 MiB). */
const TOTAL_BYTES = 48 * 1024 * 1024;
const CHUNK = Buffer.alloc(64 * 1024, 0x61);

/** POSTs an endless-looking body of `TOTAL_BYTES`; resolves with the status and how much was sent when the answer came. */
function streamPost(path: string, headers: Record<string, string>): Promise<{ status: number; body: string; sentAtResponse: number }> {
  const url = new URL(path, serve.workerUrl);
  return new Promise((resolve, reject) => {
    let sent = 0;
    let answered = false;
    const req = request(url, { method: "POST", headers: { "content-type": "application/json", ...headers } }, (res) => {
      answered = true;
      const sentAtResponse = sent;
      let body = "";
      res.on("data", (d) => (body += String(d)));
      res.on("end", () => {
        req.destroy();
        resolve({ status: res.statusCode!, body, sentAtResponse });
      });
    });
    req.on("error", (e) => (answered ? undefined : reject(e)));
    const pump = () => {
      while (!answered && sent < TOTAL_BYTES) {
        sent += CHUNK.length;
        if (!req.write(CHUNK)) {
          req.once("drain", pump);
          return;
        }
      }
      if (!answered) req.end();
    };
    pump();
  });
}

function sign(ts: number, nonce: string, method: string, path: string, body: string): string {
  return createHmac("sha256", serve.secret).update(`${ts}.${nonce}\n${method}\n${path}\n${body}`).digest("hex");
}

beforeAll(async () => {
  serve = await startServe({ staticKey: "h14-sig-key" });
}, 180_000);

afterAll(async () => {
  await serve?.stop();
});

describe("gpu-worker signature checks", () => {
  it("refuses an unsigned POST from its headers, before reading the body", async () => {
    const r = await streamPost("/v1/decode", {});
    expect(r.status).toBe(401);
    expect(JSON.parse(r.body).error.code).toBe("unauthorized");
    expect(r.sentAtResponse).toBeLessThan(TOTAL_BYTES / 2);
  }, 120_000);

  it("cuts a falsely signed streamed body off at the cap (413)", async () => {
    const ts = Math.floor(Date.now() / 1000);
    const r = await streamPost("/v1/decode", {
      "x-nest-timestamp": String(ts),
      "x-nest-nonce": randomBytes(16).toString("hex"),
      "x-nest-signature": "ab".repeat(32),
    });
    expect(r.status).toBe(413);
    expect(JSON.parse(r.body).error.code).toBe("payload_too_large");
    expect(r.sentAtResponse).toBeLessThan(TOTAL_BYTES / 2);
  }, 120_000);

  it("refuses a replay of a correctly signed request", async () => {
    const body = JSON.stringify({ query: "capital of Australia", corpus: "factbook", passages: 1 });
    const ts = Math.floor(Date.now() / 1000);
    const nonce = randomBytes(16).toString("hex");
    const headers = {
      "content-type": "application/json",
      "x-nest-timestamp": String(ts),
      "x-nest-nonce": nonce,
      "x-nest-signature": sign(ts, nonce, "POST", "/v1/retrieve", body),
    };
    const first = await fetch(`${serve.workerUrl}/v1/retrieve`, { method: "POST", headers, body });
    expect(first.status).toBe(200);
    expect(((await first.json()) as { passages: unknown[] }).passages.length).toBe(1);
    const replay = await fetch(`${serve.workerUrl}/v1/retrieve`, { method: "POST", headers, body });
    expect(replay.status).toBe(401);
    expect(await replay.json()).toEqual({
      error: { code: "unauthorized", message: "unsigned or badly signed pool request: replayed request (this signature was already used)" },
    });
    // A fresh nonce signs a new request: accepted.
    const nonce2 = randomBytes(16).toString("hex");
    const again = await fetch(`${serve.workerUrl}/v1/retrieve`, {
      method: "POST",
      body,
      headers: { ...headers, "x-nest-nonce": nonce2, "x-nest-signature": sign(ts, nonce2, "POST", "/v1/retrieve", body) },
    });
    expect(again.status).toBe(200);
  }, 60_000);
});
