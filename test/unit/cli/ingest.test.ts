import { mkdtemp, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ingest } from "@nest/cli/ingest";
import { findCorpusDir, listCorpora } from "@nest/corpus/layout";
import { readFolder, readJsonl } from "@nest/corpus/sources";
import { openLanceIndex } from "@nest/corpus/lancedb-index";
import { embedderDirFor, embedderCacheKey } from "@nest/corpus/prepare-embedder";
import { nestHome } from "@nest/corpus/home";
import { startFakeUpstash, type FakeUpstash } from "../../fixtures/fake-upstash.ts";

let home: string;
let src: string;
let fake: FakeUpstash;
const quiet = { log: () => {}, progress: { start() {}, update() {}, stop() {} } };

beforeAll(async () => {
  home = await mkdtemp(join(tmpdir(), "nest-ingest-"));
  // reuse the prepared embedder of the real cache (`nestlm setup`) instead of exporting again
  const key = await embedderCacheKey();
  await mkdir(join(home, "models"), { recursive: true });
  const { symlink } = await import("node:fs/promises");
  await symlink(embedderDirFor(key, nestHome()), embedderDirFor(key, home));
  src = join(home, "src");
  await mkdir(join(src, "sub"), { recursive: true });
  await writeFile(join(src, "kiwi.md"), "# Kiwis\n\nThe kiwi is a flightless bird native to New Zealand. It lays very large eggs.\n");
  await writeFile(join(src, "sub", "volcano.txt"), "Mount Etna is an active volcano on the island of Sicily. It erupts often.");
  await writeFile(
    join(src, "page.html"),
    "<html><head><title>Tea &amp; Coffee</title><style>p{}</style></head><body><p>Green tea comes from Camellia sinensis leaves.</p></body></html>",
  );
  await writeFile(join(src, "skip.pdf"), "not text");
  fake = await startFakeUpstash();
});
afterAll(async () => {
  await fake.close();
  await rm(home, { recursive: true, force: true });
});

describe("sources", () => {
  it("reads a folder: titles, stable ids, sources with exact offsets", async () => {
    const ps = await readFolder(src, 8);
    expect(ps.map((p) => p.title)).toEqual(["Kiwis", "Kiwis", "Kiwis", "Tea & Coffee", "volcano", "volcano"]);
    const again = await readFolder(src, 8);
    expect(again.map((p) => p.id)).toEqual(ps.map((p) => p.id));
    expect(ps[0]!.id).toMatch(/^d-[0-9a-f]{16}$/);
    const raw = await readFile(join(src, "kiwi.md"), "utf8");
    for (const p of ps.filter((x) => x.source.startsWith("kiwi.md"))) {
      const [, s, e] = /#chars=(\d+)-(\d+)$/.exec(p.source)!;
      expect(raw.slice(Number(s), Number(e))).toBe(p.text);
    }
    expect(ps[4]!.text).toBe("Mount Etna is an active volcano on the");
    expect(ps[0]!.text).toBe("# Kiwis");
  });
  it("reads JSONL, keeping given ids and naming bad lines", async () => {
    const f = join(home, "recs.jsonl");
    await writeFile(f, '{"id":"r1","title":"One","text":"Short text."}\n\n{"title":"Two","text":"Other text.","source":"x"}\n');
    const ps = await readJsonl(f);
    expect(ps.map((p) => [p.id.startsWith("d-") ? "hash" : p.id, p.title, p.source])).toEqual([
      ["r1", "One", "recs.jsonl:1"],
      ["hash", "Two", "x"],
    ]);
    await writeFile(f, '{"title":"no text"}\n');
    await expect(readJsonl(f)).rejects.toThrow(/recs\.jsonl:1/);
  });
});

describe("nestlm ingest --target local", () => {
  it("resumes after a crash, is idempotent, and the corpus is discoverable and hybrid-searchable", { timeout: 120_000 }, async () => {
    let crashed = false;
    await expect(
      ingest({
        source: src,
        target: "local",
        namespace: "notes",
        maxWords: 8,
        home,
        ...quiet,
        batchSize: 2,
        afterBatch: (n: number) => {
          if (n >= 2 && !crashed) {
            crashed = true;
            throw new Error("simulated crash");
          }
        },
      }),
    ).rejects.toThrow("simulated crash");
    const work = (await import("node:fs")).readdirSync(join(home, "corpora", "notes")).find((n) => n.endsWith(".embed"))!;
    expect((await readFile(join(home, "corpora", "notes", work, "vectors.f32"))).length).toBe(2 * 384 * 4);
    const first = await ingest({ source: src, target: "local", namespace: "notes", maxWords: 8, home, ...quiet });
    expect(first).toMatchObject({ passages: 6, written: 6 });
    const second = await ingest({ source: src, target: "local", namespace: "notes", maxWords: 8, home, ...quiet });
    expect(second).toMatchObject({ passages: 6, written: 0, dir: first.dir, contentVersion: first.contentVersion });
    expect(await findCorpusDir("notes", home)).toBe(first.dir);
    expect(await listCorpora(home)).toEqual({ notes: first.dir });

    const index = await openLanceIndex(first.dir!, "notes");
    try {
      expect(index.hybrid).toBe(true);
      expect((await index.search("flightless bird", 2, { fusion: "bm25" }))[0]!.title).toBe("Kiwis");
      const dense = await index.searchDense("which bird cannot fly?", 1);
      expect(dense[0]!.row.title).toBe("Kiwis");
      const rrf = await index.search("volcano in Sicily", 3, { fusion: "rrf" });
      expect(rrf[0]).toMatchObject({ title: "volcano", rank: 1 });
      const adaptive = await index.search("volcano in Sicily", 3, { fusion: "adaptive" });
      expect(adaptive[0]!.title).toBe("volcano");
    } finally {
      index.close();
    }
  });
  it("dry run reads only; bad namespaces are refused", async () => {
    expect(await ingest({ source: src, target: "local", namespace: "dry", dryRun: true, home, ...quiet })).toMatchObject({
      passages: 3,
      written: 0,
      dryRun: true,
    });
    await expect(ingest({ source: src, target: "local", namespace: "Bad Name", home, ...quiet })).rejects.toMatchObject({
      code: "invalid_request",
    });
  });
});

describe("nestlm ingest --target upstash", () => {
  it("batches upserts, survives 429s, resumes after a crash, and is idempotent", async () => {
    const upstash = { url: fake.url, token: fake.token, baseDelayMs: 1 };
    const opts = { source: src, target: "upstash" as const, namespace: "notes", maxWords: 8, home, upstash, upsertBatch: 2, ...quiet };
    fake.failNext(1, 429);
    await expect(
      ingest({
        ...opts,
        afterBatch: (n) => {
          if (n === 2) throw new Error("simulated crash");
        },
      }),
    ).rejects.toThrow("simulated crash");
    const upserts = () =>
      fake.requests.filter((r) => r.path === "/upsert-data/notes" && r.status === 200).map((r) => (r.body as unknown[]).length);
    expect(upserts()).toEqual([2]);
    const res = await ingest(opts);
    expect(res).toMatchObject({ passages: 6, written: 4 });
    expect(upserts()).toEqual([2, 2, 2]);
    expect(fake.store.get("notes")!.size).toBe(6);
    expect(await ingest(opts)).toMatchObject({ written: 0 });
    expect(upserts()).toEqual([2, 2, 2]);
    const rec = JSON.parse(await readFile(join(home, "ingest", "upstash-notes.json"), "utf8"));
    expect(rec).toMatchObject({ namespace: "notes", version: res.contentVersion, passages: 6 });
  });
});
