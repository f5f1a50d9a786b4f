import { describe, expect, it } from "vitest";
import { chargeColdEncoding, type ExampleRecord } from "@nest/gpu-worker/eval/runner";

const rec = (variant: string, storeKeys: number, encoding: number, total: number) =>
  ({ variant, usage: { store_keys: storeKeys }, timings_ms: { retrieval: 0, encoding, knn: 0, lm: 0, total } }) as unknown as ExampleRecord;

describe("chargeColdEncoding", () => {
  it("charges the first (cold) encoding to every store-using variant", () => {
    const out = chargeColdEncoding([rec("base", 0, 0, 100), rec("knnlm", 500, 3000, 4000), rec("nest", 500, 12, 800)]);
    expect(out.map((r) => [r.timings_ms.encoding, r.timings_ms.total])).toEqual([
      [0, 100],
      [3000, 4000],
      [3000, 3788],
    ]);
  });
});
