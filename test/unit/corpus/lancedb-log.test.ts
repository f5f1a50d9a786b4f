/**
 * Regression: with Lance's default CPU pool (cores − 2, at least 1) a 2-core machine deadlocked
 * for good building the full-text index of 60,000 passages (0 % CPU; lancedb/lancedb#3568).
 * `@nest/corpus/lancedb-log` raises the pool to max(4, cores); the build must finish.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { Passage } from "@nest/shared/protocol/passage";
import { buildLanceIndex, openLanceIndex } from "@nest/corpus/lancedb-index";

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

function* passages(n: number): Generator<Passage> {
  let s = 1;
  const r = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
  for (let i = 0; i < n; i++) {
    const words = Array.from({ length: 60 }, () => `w${Math.floor(r() * r() * 30000).toString(36)}`);
    yield { id: `p${i}`, title: words[0]!, text: words.join(" "), source: `s#${i}` };
  }
}

describe("LanceDB CPU pool", () => {
  it("builds and searches the full-text index of 60,000 passages (deadlocked on 2 cores before)", { timeout: 90_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), "nest-lance-pool-"));
    dirs.push(dir);
    expect(await buildLanceIndex(dir, passages(60_000), { batchSize: 20_000 })).toEqual({ rows: 60_000 });
    const index = await openLanceIndex(dir, "synthetic");
    try {
      expect(await index.count()).toBe(60_000);
      const hits = await index.search("w1 w2", 40);
      expect(hits).toHaveLength(40);
      expect(hits.map((h) => h.rank)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    } finally {
      index.close();
    }
  });
});
