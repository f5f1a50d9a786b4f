import { describe, expect, it } from "vitest";
import { SentenceEmbedder } from "@nest/corpus/embedder";
import { findEmbedderDir } from "@nest/corpus/prepare-embedder";

describe("SentenceEmbedder (all-MiniLM-L6-v2 ONNX, needs `nestlm setup`)", () => {
  it("matches sentence-transformers on the exporter's parity sentence; unit length, dim 384", async () => {
    const e = await SentenceEmbedder.load((await findEmbedderDir()).dir);
    try {
      expect(e.dim).toBe(384);
      const [v, w] = await e.embed(["The capital of Australia is Canberra.", "short"]);
      expect(v!.length).toBe(384);
      // PyTorch reference (sentence-transformers 6.2.0, normalize_embeddings=True), first 8 values
      const ref = [0.08219033, 0.00911682, -0.02013423, 0.06534053, -0.01732545, 0.05241688, 0.01671126, -0.02932736];
      ref.forEach((r, i) => expect(v![i]).toBeCloseTo(r, 5));
      expect(Math.hypot(...w!)).toBeCloseTo(1, 5);
      // padding does not change a text's vector
      const [alone] = await e.embed(["short"]);
      alone!.forEach((x, i) => expect(x).toBeCloseTo(w![i]!, 5));
      expect(e.tokenize("word ".repeat(400)).length).toBe(256);
    } finally {
      await e.close();
    }
  });
});
