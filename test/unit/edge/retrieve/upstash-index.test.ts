import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createUpstashIndex, upsertPassages, upstashClient, upstashRecord } from "@nest/edge/retrieve/upstash-index";
import { startFakeUpstash, type FakeUpstash } from "../../../fixtures/fake-upstash.ts";

let fake: FakeUpstash;
beforeAll(async () => {
  fake = await startFakeUpstash();
});
afterAll(() => fake.close());

const passages = [
  { id: "p1", title: "Australia", text: "Canberra is the capital of Australia.", source: "a.md#chars=0-37" },
  { id: "p2", title: "France", text: "Paris is the capital of France.", source: "f.md#chars=0-31" },
];

describe("Upstash adapter against a fake REST server", () => {
  it("upserts data records with metadata into the namespace and queries them back with scores", async () => {
    const client = upstashClient({ url: fake.url, token: fake.token, baseDelayMs: 1 });
    await upsertPassages(client, "docs", passages);
    const up = fake.requests.at(-1)!;
    expect(up.path).toBe("/upsert-data/docs");
    expect(up.body).toEqual(passages.map(upstashRecord));
    expect(upstashRecord(passages[0]!).data).toBe("Australia Canberra is the capital of Australia.");

    const index = createUpstashIndex({ url: fake.url, token: fake.token, corpus: "docs", fusion: "DBSF" });
    const hits = await index.search("capital of Australia?", 5);
    const q = fake.requests.at(-1)!;
    expect(q.path).toBe("/query-data/docs");
    expect(q.body).toEqual({ data: "capital of Australia?", topK: 5, includeMetadata: true, queryMode: "HYBRID", fusionAlgorithm: "DBSF" });
    expect(hits.map((h) => [h.id, h.rank, h.score])).toEqual([
      ["p1", 1, 1],
      ["p2", 2, 2 / 3],
    ]);
    expect(hits[0]).toMatchObject({ title: "Australia", text: passages[0]!.text, source: passages[0]!.source });
  });

  it("maps fusion options onto query modes", async () => {
    const index = createUpstashIndex({ url: fake.url, token: fake.token, corpus: "docs" });
    await index.search("Paris", 1, { fusion: "bm25" });
    expect(fake.requests.at(-1)!.body).toMatchObject({ queryMode: "SPARSE" });
    await index.search("Paris", 1, { fusion: "adaptive" });
    expect(fake.requests.at(-1)!.body).toMatchObject({ queryMode: "HYBRID", fusionAlgorithm: "RRF" });
  });

  it("retries 429 and 5xx with backoff, then succeeds", async () => {
    fake.failNext(2, 429);
    const index = createUpstashIndex({ url: fake.url, token: fake.token, corpus: "docs", baseDelayMs: 1 });
    const before = fake.requests.length;
    expect((await index.search("Paris", 1))[0]!.id).toBe("p2");
    expect(fake.requests.slice(before).map((r) => r.status)).toEqual([429, 429, 200]);
  });

  it("gives up with upstream_unavailable after the retries, and fails fast on 4xx", async () => {
    fake.failNext(3, 503);
    const index = createUpstashIndex({ url: fake.url, token: fake.token, corpus: "docs", retries: 2, baseDelayMs: 1 });
    await expect(index.search("Paris", 1)).rejects.toMatchObject({ code: "upstream_unavailable" });
    const bad = createUpstashIndex({ url: fake.url, token: "wrong", corpus: "docs", baseDelayMs: 1 });
    await expect(bad.search("Paris", 1)).rejects.toMatchObject({ code: "invalid_request", message: expect.stringContaining("401") });
  });

  it("returns [] for a blank query without calling Upstash, and checks k", async () => {
    const index = createUpstashIndex({ url: fake.url, token: fake.token, corpus: "docs" });
    const before = fake.requests.length;
    expect(await index.search("   ", 3)).toEqual([]);
    expect(fake.requests.length).toBe(before);
    await expect(index.search("x", 0)).rejects.toMatchObject({ code: "invalid_request" });
  });
});
