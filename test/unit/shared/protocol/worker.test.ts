import { describe, expect, it } from "vitest";
import { RetrieveRequestSchema } from "@nest/shared/protocol/worker";
import { FUSION_METHODS } from "@nest/shared/retrieve/fusion";

describe("RetrieveRequestSchema", () => {
  it("takes an optional `fusion` with every method of retrieve/fusion", () => {
    expect(RetrieveRequestSchema.parse({ query: "q", corpus: "notes", passages: 3 })).toEqual({ query: "q", corpus: "notes", passages: 3 });
    expect(RetrieveRequestSchema.shape.fusion.unwrap().options).toEqual([...FUSION_METHODS]);
    for (const fusion of FUSION_METHODS)
      expect(RetrieveRequestSchema.parse({ query: "q", corpus: "notes", passages: 3, fusion }).fusion).toBe(fusion);
  });

  it("refuses an unknown fusion, naming the field", () => {
    const r = RetrieveRequestSchema.safeParse({ query: "q", corpus: "notes", passages: 3, fusion: "dbsf" });
    expect(r.success).toBe(false);
    expect(r.error?.issues[0]?.path).toEqual(["fusion"]);
  });
});
