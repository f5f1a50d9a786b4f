import { describe, expect, it } from "vitest";
import { Hono } from "hono";
import { faqCacheKey } from "@nest/edge/cache/faq-cache";
import { documentsBodyLimit } from "@nest/edge/middleware/documents-limit";
import { NestError, toNestError } from "@nest/shared/protocol/errors";
import { GenerateRequestSchema } from "@nest/shared/protocol/request";

describe("FAQ cache key with documents", () => {
  const ctx = { corpusVersion: "@documents", model: "m" };
  const req = (documents?: Array<{ text: string; title?: string }>) =>
    GenerateRequestSchema.parse({ prompt: "What is X?", ...(documents && { documents }) });

  it("is the same for the same documents and differs when any document changes", async () => {
    const a = await faqCacheKey(req([{ text: "one" }, { text: "two" }]), ctx);
    expect(await faqCacheKey(req([{ text: "one" }, { text: "two" }]), ctx)).toBe(a);
    expect(await faqCacheKey(req([{ text: "two" }, { text: "one" }]), ctx)).not.toBe(a);
    expect(await faqCacheKey(req([{ text: "one" }, { text: "two", title: "t" }]), ctx)).not.toBe(a);
    expect(await faqCacheKey(req([{ text: "one" }, { text: "two " }]), ctx)).not.toBe(a);
    expect(await faqCacheKey(req(), { corpusVersion: "v", model: "m" })).not.toBe(a);
    expect(a).toMatch(/^faq:[0-9a-f]{64}$/);
  });
});

describe("documentsBodyLimit", () => {
  const app = new Hono();
  app.post("/", documentsBodyLimit(100, 1000), async (c) => c.json({ bytes: (await c.req.raw.text()).length }));
  app.onError((err, c) => c.json(toNestError(err).toBody(), toNestError(err).status as 400));
  const stream = (text: string) =>
    new ReadableStream({
      start(ctl) {
        ctl.enqueue(new TextEncoder().encode(text));
        ctl.close();
      },
    });
  const post = (body: string, chunked = false) =>
    app.request("/", {
      method: "POST",
      body: chunked ? stream(body) : body,
      headers: chunked ? {} : { "content-length": String(body.length) },
      ...(chunked && { duplex: "half" }),
    } as RequestInit);

  it("passes bodies within the base limit unread, and larger ones only with documents (content-length or chunked)", async () => {
    const small = JSON.stringify({ prompt: "x".repeat(50) });
    const big = JSON.stringify({ prompt: "x".repeat(200) });
    const bigDocs = JSON.stringify({ prompt: "q", documents: [{ text: "x".repeat(200) }] });
    const bigNest = JSON.stringify({ model: "m", nest: { documents: [{ text: "x".repeat(200) }] } });
    for (const chunked of [false, true]) {
      expect(await (await post(small, chunked)).json()).toEqual({ bytes: small.length });
      const refused = await post(big, chunked);
      expect(refused.status).toBe(413);
      expect(await refused.json()).toEqual(
        new NestError(
          "payload_too_large",
          "request body exceeds 100 bytes (up to 1000 are accepted for requests that carry `documents`)",
        ).toBody(),
      );
      expect(await (await post(bigDocs, chunked)).json()).toEqual({ bytes: bigDocs.length });
      expect(await (await post(bigNest, chunked)).json()).toEqual({ bytes: bigNest.length });
      expect((await post(JSON.stringify({ documents: [], p: "x".repeat(200) }), chunked)).status).toBe(413);
      const huge = await post(JSON.stringify({ documents: [{ text: "x".repeat(2000) }] }), chunked);
      expect(huge.status).toBe(413);
      expect(((await huge.json()) as { error: { message: string } }).error.message).toBe(
        "request body exceeds 1000 bytes, the most accepted (with `documents`; 100 without)",
      );
    }
  });
});
