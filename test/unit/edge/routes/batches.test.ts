/**
 * What the edge's batch routes decide alone: auth, batch-id shape, body limit, and a job API that
 * cannot be reached (no stand-in pool: forwarding runs end to end in test/e2e/batch.test.ts).
 */
import { createServer } from "node:net";
import { beforeAll, describe, expect, it } from "vitest";
import { createApp } from "@nest/edge/app";
import { sha256Hex } from "@nest/edge/middleware/auth";
import { keyAuth } from "@nest/edge/middleware/keys";
import { createPoolClient } from "@nest/edge/route/pool-client";
import { registerBatchRoutes } from "@nest/edge/routes/batches";

const KEY = "batch-key";
let app: ReturnType<typeof createApp>;
let poolUrl: string;

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

beforeAll(async () => {
  poolUrl = `http://127.0.0.1:${await deadPort()}`;
  app = createApp({ apiKeyHashes: [await sha256Hex(KEY)], pool: createPoolClient(poolUrl), indexFor: async () => undefined });
  registerBatchRoutes(app, { poolUrl, auth: keyAuth({ staticHashes: [await sha256Hex(KEY)] }, "batch"), maxBodyBytes: 64 });
});

const auth = { authorization: `Bearer ${KEY}` };

describe("edge batch routes", () => {
  it("needs the bearer key on every route", async () => {
    for (const [method, path] of [
      ["POST", "/v1/batches"],
      ["GET", `/v1/batches/batch_${"a".repeat(24)}`],
      ["GET", `/v1/batches/batch_${"a".repeat(24)}/results`],
      ["POST", `/v1/batches/batch_${"a".repeat(24)}/cancel`],
    ]) {
      const res = await app.request(path!, { method });
      expect(res.status).toBe(401);
      expect(await res.json()).toEqual({
        error: { code: "missing_api_key", message: "missing API key: send `Authorization: Bearer <key>`" },
      });
    }
  });

  it("answers 404 for a malformed batch id without calling the pool", async () => {
    const res = await app.request("/v1/batches/..%2F..%2Fhealthz", { headers: auth });
    expect(res.status).toBe(404);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("not_found");
  });

  it("answers 413 over the body limit", async () => {
    const res = await app.request("/v1/batches", {
      method: "POST",
      headers: { ...auth, "content-type": "application/x-ndjson" },
      body: "x".repeat(65),
    });
    expect(res.status).toBe(413);
    expect(await res.json()).toEqual({ error: { code: "payload_too_large", message: "batch body exceeds 64 bytes" } });
  });

  it("answers 502 upstream_unavailable when the job API is down", async () => {
    const res = await app.request(`/v1/batches/batch_${"a".repeat(24)}`, { headers: auth });
    expect(res.status).toBe(502);
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe("upstream_unavailable");
    expect(body.error.message.startsWith(`batch job API unreachable at ${poolUrl}: `)).toBe(true);
  });
});
