/**
 * `store_passages` (docs/nest-algorithm.md §14): the token store holds the first `store_passages`
 * first-stage passages, plus the passage of the anchor's sentence (three candidates' with `anchor:
 * question`) ranked over all of them; only those are encoded, searched and cited (real model, greedy).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { findModelDir } from "@nest/gpu-worker/runtime/prepare-model";
import { Engine } from "@nest/gpu-worker/engine/engine";
import { GenerateRequestSchema } from "@nest/shared/protocol/request";
import type { DeltaEvent, DoneEvent } from "@nest/shared/protocol/events";

// First-stage rank order: the passage that answers the question is ranked last.
const PASSAGES = [
  { id: "nepal", title: "Nepal", source: "t", text: "Nepal, elevation extremes: highest point: Mount Everest 8,850 m" },
  { id: "kiribati", title: "Kiribati", source: "t", text: "Kiribati, capital: name: Tarawa; it lies between Hawaii and Australia." },
  {
    id: "australia",
    title: "Australia",
    source: "t",
    text: "Australia, capital: name: Canberra; geographic coordinates: 35 17 S, 149 08 E",
  },
];

let home: string;
let engine: Engine;

const FILLER = {
  id: "fiji",
  title: "Fiji",
  source: "t",
  text: "Fiji, climate: tropical marine; only slight seasonal temperature variation",
};

async function ask(
  params: Record<string, unknown>,
  passages: readonly (typeof PASSAGES)[number][] = PASSAGES,
): Promise<{ deltas: DeltaEvent[]; done: DoneEvent }> {
  const request = GenerateRequestSchema.parse({ prompt: "What is the capital of Australia?", mode: "nest", max_new_tokens: 16, ...params });
  const deltas: DeltaEvent[] = [];
  let done: DoneEvent | undefined;
  await engine.run({ request, passages: [...passages] }, { delta: (d) => void deltas.push(d), done: (d) => void (done = d) });
  return { deltas, done: done! };
}

beforeAll(async () => {
  home = await mkdtemp(join(tmpdir(), "nest-store-passages-"));
  engine = await Engine.load(await findModelDir(), { home, diskKeyCache: false, corpusKeys: false, precision: "fp32" });
});
afterAll(async () => {
  await rm(home, { recursive: true, force: true });
});

describe("store_passages", () => {
  it("defaults to 10 of the 40 first-stage passages", () => {
    const req = GenerateRequestSchema.parse({ prompt: "q" });
    expect(req.passages).toBe(40);
    expect(req.store_passages).toBe(10);
    expect(() => GenerateRequestSchema.parse({ prompt: "q", store_passages: 0 })).toThrow(/store_passages/);
  });

  it("stores, encodes and cites only the first store_passages passages", async () => {
    const all = await ask({ store_passages: 3 });
    expect(all.done.usage.store_passages).toBe(3);
    expect(all.done.usage.encoded_passages).toBe(3);
    // With the Australia passage in the store, the anchor quotes it.
    expect(all.deltas[0]!.citation?.passage_id).toBe("australia");
    expect(all.deltas[0]!.text.startsWith("Australia, capital")).toBe(true);

    // Without an anchor the store is the first two: Australia is neither stored nor cited.
    const two = await ask({ store_passages: 2, anchor: "none" });
    expect(two.done.usage.store_passages).toBe(2);
    // The memory LRU holds the first two from the run above: nothing is encoded.
    expect(two.done.usage.encoded_passages).toBe(0);
    const cited = new Set(two.deltas.flatMap((d) => (d.citation ? [d.citation.passage_id] : [])));
    expect(cited.has("australia")).toBe(false);

    // With the sentence anchor (default), ranked over all three, its passage joins the store: the
    // store is the same three passages in the same order, so the answer is the 3-passage store's.
    const anchored = await ask({ store_passages: 2 });
    expect(anchored.done.usage.store_passages).toBe(3);
    expect(anchored.deltas[0]!.citation?.passage_id).toBe("australia");
    expect(anchored.deltas.map((d) => d.text)).toEqual(all.deltas.map((d) => d.text));
    expect(anchored.deltas.map((d) => d.citation ?? null)).toEqual(all.deltas.map((d) => d.citation ?? null));

    // A gap: Australia ranked 4th of 5 joins a store of 2 as its 3rd passage (store index 2, not
    // rank 3), and the quote is the same as in the 3-passage store above.
    const [nepal, kiribati, australia] = PASSAGES;
    const gap = await ask({ store_passages: 2 }, [nepal!, kiribati!, FILLER, australia!, FILLER]);
    expect(gap.done.usage.store_passages).toBe(3);
    expect(gap.deltas[0]!.citation?.passage_id).toBe("australia");
    expect(gap.deltas[0]!.text).toBe(all.deltas[0]!.text);
    expect(gap.deltas[0]!.citation).toEqual(all.deltas[0]!.citation);

    // The same passage twice: `anchor: question` ranks both copies' sentences among its three
    // candidates, and the copy at rank 2 maps to the stored one instead of being stored again.
    const dup = await ask({ store_passages: 2, anchor: "question" }, [australia!, nepal!, australia!]);
    expect(dup.done.usage.store_passages).toBe(2);

    // speculation off never drafts, so no anchor passage is added.
    const off = await ask({ store_passages: 2, speculation: "off" });
    expect(off.done.usage.store_passages).toBe(2);

    // passages caps the store as before: 1 first-stage passage, a store of 1.
    const one = await ask({ passages: 1, store_passages: 3 });
    expect(one.done.usage.store_passages).toBe(1);
  });
});
