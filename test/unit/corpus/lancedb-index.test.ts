import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Passage } from "@nest/shared/protocol/passage";
import { NestError } from "@nest/shared/protocol/errors";
import { buildLanceIndex, openLanceIndex, type LancePassageIndex } from "@nest/corpus/lancedb-index";
import { DEFAULT_PASSAGES } from "@nest/shared/retrieve/passage-index";
import { prepareCorpus } from "@nest/corpus/prepare-corpus";

const P = (id: string, title: string, text: string): Passage => ({ id, title, text, source: `test#${id}` });

// Indexed text is `title + "\n" + text`; after stemming and stop-word removal the documents have
// 7, 7, 11, 14 and 10 tokens (avgdl 49/5 = 9.8), e.g. a: australia govern capit australia capit name canberra.
const PASSAGES = [
  P("a", "Australia › Government › Capital", "Australia, capital: name: Canberra"),
  P("b", "Austria › Government › Capital", "Austria, capital: name: Vienna"),
  P("c", "Australia › Geography › Area", "Australia, area: total: 7,741,220 sq km"),
  P("d", "Nepal › Geography › Elevation extremes", "Nepal, elevation extremes: highest point: Mount Everest 8,850 m"),
  P("e", "Brazil › Government › Independence", "Brazil, independence: 7 September 1822 (from Portugal)"),
];

/** BM25 term score (k1 = 1.2, b = 0.75, idf = ln(1 + (N - n + 0.5) / (n + 0.5))). */
const bm25 = (n: number, tf: number, dl: number) =>
  Math.log(1 + (5 - n + 0.5) / (n + 0.5)) * ((tf * 2.2) / (tf + 1.2 * (0.25 + (0.75 * dl) / 9.8)));

describe("LanceDB passage index (small)", () => {
  let dir: string;
  let index: LancePassageIndex;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "nest-lance-"));
    expect(await buildLanceIndex(dir, PASSAGES, { batchSize: 2 })).toEqual({ rows: 5 });
    index = await openLanceIndex(dir, "test");
  });
  afterAll(async () => {
    index?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("scores a single term with BM25", async () => {
    const hits = await index.search("Canberra", 10);
    expect(hits.map((h) => [h.id, h.rank])).toEqual([["a", 1]]);
    expect(hits[0]?.score).toBeCloseTo(bm25(1, 1, 7), 4); // ln 4 * 2.2 / (1 + 1.2 * 0.7857) = 1.5698
    expect(hits[0]).toMatchObject(PASSAGES[0]!);
  });

  it("ranks the capital of Australia first and sums term scores", async () => {
    const hits = await index.search("What is the capital of Australia?", 10);
    expect(hits.map((h) => h.id)).toEqual(["a", "b", "c"]);
    expect(hits.map((h) => h.rank)).toEqual([1, 2, 3]);
    // a: capital (tf 2, n 2) + australia (tf 2, n 2); b: capital; c: australia (dl 11)
    expect(hits[0]?.score).toBeCloseTo(2 * bm25(2, 2, 7), 4); // 2.6179
    expect(hits[1]?.score).toBeCloseTo(bm25(2, 2, 7), 4); // 1.3090
    expect(hits[2]?.score).toBeCloseTo(bm25(2, 2, 11), 4); // 1.1637
  });

  it("returns all matches when k exceeds them, and only k otherwise", async () => {
    expect((await index.search("Australia Austria Nepal Brazil", 100)).map((h) => h.id).sort()).toEqual(["a", "b", "c", "d", "e"]);
    expect(await index.search("Australia Austria Nepal Brazil", 2)).toHaveLength(2);
  });

  it("does not throw on hostile queries; empty and stop-word-only queries give []", async () => {
    const hostile = [
      '"',
      '"unbalanced',
      "a AND OR NOT (",
      "title:foo",
      "*",
      "\\",
      "'; DROP TABLE passages; --",
      "()[]{}^~?",
      "\u0000\u0001",
      "🙂",
      "x".repeat(10_000),
      "Canberra*~^:",
    ];
    for (const q of hostile) expect(Array.isArray(await index.search(q, 5))).toBe(true);
    expect((await index.search('"Canberra"!!', 5)).map((h) => h.id)).toEqual(["a"]);
    expect(await index.search("", 5)).toEqual([]);
    expect(await index.search("  ?! ", 5)).toEqual([]);
    expect(await index.search("the of and is", 5)).toEqual([]);
  });

  it("rejects a bad k and a missing index", async () => {
    await expect(index.search("capital", 0)).rejects.toMatchObject({ code: "invalid_request" });
    await expect(index.search("capital", 1.5)).rejects.toBeInstanceOf(NestError);
    await expect(openLanceIndex(join(dir, "nope"), "test")).rejects.toMatchObject({ code: "not_found" });
    await expect(buildLanceIndex(join(dir, "empty"), [])).rejects.toMatchObject({ code: "invalid_request" });
  });
});

describe("LanceDB passage index (prepared factbook)", () => {
  let index: LancePassageIndex;
  beforeAll(async () => {
    const { dir, passages } = await prepareCorpus({ log: () => {} });
    expect(passages).toBe(39828);
    index = await openLanceIndex(dir, "factbook");
  });
  afterAll(() => index?.close());

  it("finds Australia's capital in the top 5", async () => {
    const hits = await index.search("What is the capital of Australia?", DEFAULT_PASSAGES);
    expect(hits).toHaveLength(40);
    expect(hits.slice(0, 5).map((h) => h.title)).toContain("Australia › Government › Capital");
    expect(hits.find((h) => h.title === "Australia › Government › Capital")?.text).toContain("Canberra");
    for (let i = 1; i < hits.length; i++) expect(hits[i]!.score).toBeLessThanOrEqual(hits[i - 1]!.score);
  });

  it("ranks Nepal's elevation extremes first for its highest point", async () => {
    const [top] = await index.search("What is the highest point in Nepal?", 5);
    expect(top?.title).toBe("Nepal › Geography › Elevation extremes");
    expect(top?.text).toContain("Mount Everest 8,850 m");
  });
});
