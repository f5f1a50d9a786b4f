import { mkdtemp, mkdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { findCorpusDir, listCorpora, writeCurrent, writeReady } from "@nest/corpus/layout";

describe("corpus layout: a relocated $NEST_HOME", () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it("finds the index of a home written elsewhere (copied to a volume, baked into an image)", async () => {
    const home = await mkdtemp(join(tmpdir(), "nest-layout-"));
    dirs.push(home);
    const index = join(home, "corpora", "factbook", "cc9b92a3d9f7");
    await mkdir(index, { recursive: true });
    await writeReady(index, {
      corpus: "factbook",
      version: "cc9b92a3d9f7aa",
      contentVersion: "bb",
      embedderKey: "bm25-only",
      indexFormat: 1,
      passages: 3,
      createdAt: "2026-01-01T00:00:00.000Z",
      buildSeconds: 0,
    });
    // current.json as `nestlm setup` wrote it on the build machine, under another home.
    await writeCurrent("factbook", { version: "cc9b92a3d9f7aa", dir: "/build-machine/.cache/nest/corpora/factbook/cc9b92a3d9f7" }, home);
    expect(await findCorpusDir("factbook", home)).toBe(index);
    expect(await listCorpora(home)).toEqual({ factbook: index });
  });

  it("still refuses a folder without READY.json", async () => {
    const home = await mkdtemp(join(tmpdir(), "nest-layout-"));
    dirs.push(home);
    await mkdir(join(home, "corpora", "factbook", "0123456789ab"), { recursive: true });
    await writeCurrent("factbook", { version: "0123456789abff", dir: "/elsewhere/corpora/factbook/0123456789ab" }, home);
    await expect(findCorpusDir("factbook", home)).rejects.toThrow(/not prepared/);
    expect(await listCorpora(home)).toEqual({});
  });
});
