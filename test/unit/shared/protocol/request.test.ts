import { describe, expect, it } from "vitest";
import { FusionSchema, GenerateRequestSchema, resolveGamma } from "@nest/shared/protocol/request";
import { FUSION_METHODS } from "@nest/shared/retrieve/fusion";

describe("GenerateRequestSchema", () => {
  it("applies the documented defaults", () => {
    const r = GenerateRequestSchema.parse({ prompt: "q" });
    expect([r.mode, r.alpha, r.tau, r.delta, r.k, r.passages, r.max_span, r.max_new_tokens]).toEqual([
      "nest",
      0.2,
      0.1,
      0.5,
      1024,
      40,
      64,
      128,
    ]);
    expect(resolveGamma(r)).toBe(5e-4);
    expect(resolveGamma({ mode: "rag-nest", gamma: undefined })).toBe(0.5);
  });

  it("resolves γ's default by mode at parse time; a stated γ wins", () => {
    expect(GenerateRequestSchema.parse({ prompt: "q" }).gamma).toBe(5e-4);
    expect(GenerateRequestSchema.parse({ prompt: "q", mode: "rag-nest" }).gamma).toBe(0.5);
    expect(GenerateRequestSchema.parse({ prompt: "q", mode: "rag-nest", gamma: 0.01 }).gamma).toBe(0.01);
    expect(GenerateRequestSchema.parse({ prompt: "q" })).toEqual(GenerateRequestSchema.parse({ prompt: "q", gamma: 5e-4 }));
  });

  it("a prompt of white space or invisible format characters only is blank; one visible character is not", () => {
    for (const prompt of [" \t\n", "\u200B\u200B", "\u00A0\u2060\uFEFF", "\u200D \u00AD"]) {
      const r = GenerateRequestSchema.safeParse({ prompt });
      expect(r.success).toBe(false);
      expect(r.error?.issues[0]).toMatchObject({ path: ["prompt"], message: "must not be blank (whitespace only)" });
    }
    expect(GenerateRequestSchema.safeParse({ prompt: "\u200Bé" }).success).toBe(true);
    expect(GenerateRequestSchema.safeParse({ messages: [{ role: "user", content: "\u200B" }] }).success).toBe(false);
  });

  it("rejects messages without a user message, and unknown fields inside a message", () => {
    const noUser = GenerateRequestSchema.safeParse({ messages: [{ role: "system", content: "be brief" }] });
    expect(noUser.success).toBe(false);
    expect(noUser.error?.issues[0]?.path).toEqual(["messages"]);
    const extra = GenerateRequestSchema.safeParse({ messages: [{ role: "user", content: "x", name: "n" }] });
    expect(extra.success).toBe(false);
  });

  it("takes an optional `fusion`: rrf or adaptive, absent by default", () => {
    expect(GenerateRequestSchema.parse({ prompt: "q" }).fusion).toBeUndefined();
    expect(GenerateRequestSchema.parse({ prompt: "q", fusion: "rrf" }).fusion).toBe("rrf");
    expect(GenerateRequestSchema.parse({ prompt: "q", fusion: "adaptive" }).fusion).toBe("adaptive");
    for (const fusion of ["bm25", "dense", "RRF", "dbsf", 1, null]) {
      const r = GenerateRequestSchema.safeParse({ prompt: "q", fusion });
      expect(r.success).toBe(false);
      expect(r.error?.issues[0]?.path).toEqual(["fusion"]);
    }
  });

  it("fusion names are the ones retrieve/fusion implements", () => {
    for (const f of FusionSchema.options) expect(FUSION_METHODS).toContain(f);
  });
});
