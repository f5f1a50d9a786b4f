/**
 * The {@link PassageIndex} contract (`shared/src/retrieve/passage-index.ts`), as one suite every
 * implementation runs (`passage-index.test.ts`): LanceDB (`@nest/corpus/lancedb-index`), Upstash
 * Vector (through the thin fake of its REST API, `test/fixtures/fake-upstash.ts`) and the pool index
 * (`edge/src/retrieve/pool-index.ts`) over a real gpu-worker's `POST /v1/retrieve`. Each subject
 * indexes {@link CONTRACT_PASSAGES} as corpus {@link CONTRACT_CORPUS}.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Passage } from "@nest/shared/protocol/passage";
import type { PassageIndex } from "@nest/shared/retrieve/passage-index";

export const CONTRACT_CORPUS = "contract";

const P = (id: string, title: string, text: string): Passage => ({ id, title, text, source: `contract#${id}` });

/** Five passages; each query below matches a known subset of them. */
export const CONTRACT_PASSAGES: readonly Passage[] = [
  P("a", "Australia › Government › Capital", "Australia, capital: name: Canberra"),
  P("b", "Austria › Government › Capital", "Austria, capital: name: Vienna"),
  P("c", "Australia › Geography › Area", "Australia, area: total: 7,741,220 sq km"),
  P("d", "Nepal › Geography › Elevation extremes", "Nepal, elevation extremes: highest point: Mount Everest 8,850 m"),
  P("e", "Brazil › Government › Independence", "Brazil, independence: 7 September 1822 (from Portugal)"),
];

/** An index under test. */
export interface PassageIndexSubject {
  index: PassageIndex;
  close?(): Promise<void>;
}

/** Defines the contract suite for the index `open` returns over {@link CONTRACT_PASSAGES}. */
export function passageIndexContract(name: string, open: () => Promise<PassageIndexSubject>): void {
  describe(`PassageIndex contract: ${name}`, () => {
    let s: PassageIndexSubject;
    beforeAll(async () => {
      s = await open();
    }, 120_000);
    afterAll(async () => {
      await s?.close?.();
    });

    it("names its corpus", () => {
      expect(s.index.corpus).toBe(CONTRACT_CORPUS);
    });

    it("ranks the one passage naming the query word first, with its id, title, text and source as indexed", async () => {
      const hits = await s.index.search("Canberra", 5);
      expect(hits).toHaveLength(1);
      const { score, rank, ...passage } = hits[0]!;
      expect(passage).toEqual(CONTRACT_PASSAGES[0]);
      expect(rank).toBe(1);
      expect(score).toBeGreaterThan(0);
    });

    it("returns at most `passages` hits, best first: ranks 1..n, scores not increasing, ids distinct", async () => {
      expect((await s.index.search("capital Australia", 1)).map((h) => h.rank)).toEqual([1]);
      const hits = await s.index.search("capital Australia Nepal Brazil", 10);
      expect(hits.length).toBeGreaterThanOrEqual(4);
      expect(hits.length).toBeLessThanOrEqual(5);
      expect(hits.map((h) => h.rank)).toEqual(hits.map((_, i) => i + 1));
      for (let i = 1; i < hits.length; i++) expect(hits[i]!.score).toBeLessThanOrEqual(hits[i - 1]!.score);
      expect(new Set(hits.map((h) => h.id)).size).toBe(hits.length);
      const known = new Map(CONTRACT_PASSAGES.map((p) => [p.id, p]));
      for (const { score: _s, rank: _r, ...p } of hits) expect(p).toEqual(known.get(p.id));
    });

    it("returns fewer passages (or none) when fewer match", async () => {
      expect((await s.index.search("Everest", 5)).map((h) => h.id)).toEqual(["d"]);
      expect(await s.index.search("zebra", 5)).toEqual([]);
    });

    it("never throws on odd query text", async () => {
      for (const q of ['"Canberra"!!', "AND OR NOT ( ) * ~ ^ : [", "   ", "Canberra\u0000\u200b"]) {
        expect(Array.isArray(await s.index.search(q, 3))).toBe(true);
      }
      expect((await s.index.search('"Canberra"!!', 3))[0]?.id).toBe("a");
    });

    it("takes a fusion option (single-retriever indexes ignore it)", async () => {
      expect((await s.index.search("Canberra", 3, { fusion: "rrf" }))[0]?.id).toBe("a");
    });

    it("refuses a passages count that is not a positive integer with invalid_request", async () => {
      await expect(s.index.search("Canberra", 0)).rejects.toMatchObject({ code: "invalid_request" });
      await expect(s.index.search("Canberra", 1.5)).rejects.toMatchObject({ code: "invalid_request" });
    });
  });
}
