import { describe, expect, it } from "vitest";
import { FaqCache, faqCacheKey, normalizeQuestion } from "@nest/edge/cache/faq-cache";
import { memoryKv } from "@nest/edge/store/kv";
import { GenerateRequestSchema } from "@nest/shared/protocol/request";
import { signRequest, verifyRequest } from "@nest/shared/protocol/hmac";

const req = (o: object) => GenerateRequestSchema.parse(o);
const ctx = { corpusVersion: "v1", model: "m" };

describe("normalizeQuestion", () => {
  it("folds case, whitespace and punctuation", () => {
    expect(normalizeQuestion("  What's the CAPITAL\tof Australia?? ")).toBe("what s the capital of australia");
  });
});

describe("faqCacheKey", () => {
  it("is equal up to normalisation and differs by version, model, mode and parameters", async () => {
    const k = await faqCacheKey(req({ prompt: "What is X?" }), ctx);
    expect(k).toMatch(/^faq:[0-9a-f]{64}$/);
    expect(await faqCacheKey(req({ prompt: "what   is x" }), ctx)).toBe(k);
    expect(await faqCacheKey(req({ prompt: "What is X?" }), { ...ctx, corpusVersion: "v2" })).not.toBe(k);
    expect(await faqCacheKey(req({ prompt: "What is X?" }), { ...ctx, model: "m2" })).not.toBe(k);
    expect(await faqCacheKey(req({ prompt: "What is X?", mode: "rag" }), ctx)).not.toBe(k);
    expect(await faqCacheKey(req({ prompt: "What is X?", alpha: 0.3 }), ctx)).not.toBe(k);
  });

  it("is the same for a request that omits γ and one that states its mode's default", async () => {
    expect(await faqCacheKey(req({ prompt: "What is X?", gamma: 5e-4 }), ctx)).toBe(await faqCacheKey(req({ prompt: "What is X?" }), ctx));
    const ragNest = await faqCacheKey(req({ prompt: "What is X?", mode: "rag-nest" }), ctx);
    expect(await faqCacheKey(req({ prompt: "What is X?", mode: "rag-nest", gamma: 0.5 }), ctx)).toBe(ragNest);
    expect(await faqCacheKey(req({ prompt: "What is X?", mode: "rag-nest", gamma: 5e-4 }), ctx)).not.toBe(ragNest);
  });
});

describe("FaqCache", () => {
  it("stores only sequences that end with done, and expires them after the TTL", async () => {
    let now = 0;
    const cache = new FaqCache(
      memoryKv(() => now),
      10,
    );
    const done = { event: "done", data: {} } as never;
    await cache.put("a", [{ event: "error", data: { error: { code: "x", message: "y" } } }]);
    expect(await cache.get("a")).toBeUndefined();
    await cache.put("a", [done]);
    expect(await cache.get("a")).toEqual([done]);
    now = 10_001;
    expect(await cache.get("a")).toBeUndefined();
  });
});

describe("HMAC signing", () => {
  it("matches an independent HMAC-SHA256 and rejects tampering and stale timestamps", async () => {
    const { createHmac } = await import("node:crypto");
    const sig = await signRequest("s3cret", 1700000000, "post", "/v1/decode", "{}");
    expect(sig).toBe(createHmac("sha256", "s3cret").update("1700000000\nPOST\n/v1/decode\n{}").digest("hex"));
    const h = { timestamp: "1700000000", signature: sig };
    expect(await verifyRequest("s3cret", h, "POST", "/v1/decode", "{}", 1700000100)).toBeUndefined();
    expect(await verifyRequest("s3cret", h, "POST", "/v1/decode", "{ }", 1700000100)).toBe("bad signature");
    expect(await verifyRequest("other", h, "POST", "/v1/decode", "{}", 1700000100)).toBe("bad signature");
    expect(await verifyRequest("s3cret", h, "POST", "/v1/decode", "{}", 1700000301)).toBe("x-nest-timestamp is more than 300 s off");
    expect(await verifyRequest("s3cret", { timestamp: undefined, signature: sig }, "POST", "/", "", 0)).toMatch(/^missing/);
  });
});
