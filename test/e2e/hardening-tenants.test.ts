/**
 * Issue 14 §1, over HTTP against `nestlm serve` (real Redis, real model): batches belong to the key
 * that made them. Key B cannot read, fetch results of, or cancel key A's batch (404, as for an
 * unknown id), reusing A's `Idempotency-Key` gives B its own batch and no error names A's id; and
 * cancelling a finished batch leaves it `completed`.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startServe, type Serve } from "./hardening-stack.ts";

const A = "tenant-a-key-h14";
const B = "tenant-b-key-h14";
let serve: Serve;

const item = (country: string) => JSON.stringify({ prompt: `What is the capital of ${country}?`, mode: "base", max_new_tokens: 2 });
const headers = (key: string, extra: Record<string, string> = {}) => ({
  authorization: `Bearer ${key}`,
  "content-type": "application/x-ndjson",
  ...extra,
});

async function call(key: string, path: string, init: RequestInit = {}) {
  const res = await fetch(`${serve.edgeUrl}${path}`, { ...init, headers: headers(key, init.headers as Record<string, string>) });
  const text = await res.text();
  return {
    status: res.status,
    text,
    json: (() => {
      try {
        return JSON.parse(text);
      } catch {
        return undefined;
      }
    })(),
  };
}

async function untilCompleted(key: string, id: string, timeoutMs = 180_000) {
  const t0 = Date.now();
  for (;;) {
    const s = await call(key, `/v1/batches/${id}`);
    expect(s.status).toBe(200);
    if (s.json.status === "completed") return s.json;
    if (Date.now() - t0 > timeoutMs) throw new Error(`batch not completed: ${s.text}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

beforeAll(async () => {
  serve = await startServe({
    staticKey: "h14-static-key",
    keys: [
      { key: A, name: "tenant-a", scopes: ["batch"] },
      { key: B, name: "tenant-b", scopes: ["batch"] },
    ],
  });
}, 180_000);

afterAll(async () => {
  await serve?.stop();
});

describe("batch tenancy", () => {
  it("keeps each key's batches and idempotency keys to itself", async () => {
    const idem = { "idempotency-key": "shared-key-1" };
    const a = await call(A, "/v1/batches", { method: "POST", body: [item("Australia"), item("Brazil")].join("\n"), headers: idem });
    expect(a.status).toBe(201);
    const aId: string = a.json.id;
    expect(aId).toMatch(/^batch_[0-9a-f]{24}$/);

    // Same Idempotency-Key, other key, other body: B's own new batch, nothing about A's.
    const b = await call(B, "/v1/batches", { method: "POST", body: item("Nepal"), headers: idem });
    expect(b.status).toBe(201);
    expect(b.json.id).not.toBe(aId);
    expect(b.text).not.toContain(aId);
    expect(b.json.total).toBe(1);
    // B resubmitting its own body with the key replays B's batch.
    const bAgain = await call(B, "/v1/batches", { method: "POST", body: item("Nepal"), headers: idem });
    expect(bAgain.status).toBe(200);
    expect(bAgain.json.id).toBe(b.json.id);
    // A reusing its key for another body: refused, and the message names no batch.
    const aOther = await call(A, "/v1/batches", { method: "POST", body: item("Peru"), headers: idem });
    expect(aOther.status).toBe(400);
    expect(aOther.json).toEqual({ error: { code: "invalid_request", message: "Idempotency-Key was already used for a different batch" } });

    // B cannot see, read or cancel A's batch: the same 404 as an unknown id.
    const notFound = { error: { code: "not_found", message: `no batch \`${aId}\` (unknown or expired)` } };
    for (const [path, method] of [
      [`/v1/batches/${aId}`, "GET"],
      [`/v1/batches/${aId}/results`, "GET"],
      [`/v1/batches/${aId}/cancel`, "POST"],
    ] as const) {
      const r = await call(B, path, { method });
      expect({ path, status: r.status, json: r.json }).toEqual({ path, status: 404, json: notFound });
    }

    // A's batch was not canceled by B and finishes.
    const done = await untilCompleted(A, aId);
    expect(done.counts).toEqual({ queued: 0, running: 0, done: 2, failed: 0, canceled: 0 });
    expect(done.canceled_at).toBeNull();
    const lines = (await call(A, `/v1/batches/${aId}/results`)).text
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l));
    expect(lines.map((l: { status: string }) => l.status)).toEqual(["done", "done"]);
  }, 240_000);

  it("leaves a completed batch completed when it is cancelled", async () => {
    const a = await call(A, "/v1/batches", { method: "POST", body: item("Canada") });
    expect(a.status).toBe(201);
    await untilCompleted(A, a.json.id);
    const cancel = await call(A, `/v1/batches/${a.json.id}/cancel`, { method: "POST" });
    expect(cancel.status).toBe(200);
    expect(cancel.json.status).toBe("completed");
    expect(cancel.json.canceled_at).toBeNull();
    expect(cancel.json.counts).toEqual({ queued: 0, running: 0, done: 1, failed: 0, canceled: 0 });
    const after = await call(A, `/v1/batches/${a.json.id}`);
    expect(after.json.status).toBe("completed");
  }, 240_000);
});
