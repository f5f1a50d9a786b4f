/**
 * @module test/unit/gpu-worker/runtime/prepare-model
 * Cache-key layout and the idempotent path of prepareModel (the model must already be prepared in
 * the default NEST_HOME by `nestlm setup`; a full preparation takes minutes and is not rerun here).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { NestError } from "@nest/shared/protocol/errors";
import { cachePaths } from "@nest/corpus/home";
import { findModelDir, modelCacheKey, modelDirFor, prepareModel } from "@nest/gpu-worker/runtime/prepare-model";
import { readManifest } from "@nest/gpu-worker/runtime/manifest";

describe("prepareModel", () => {
  it("names the model folder after the first 12 hex of the cache key", async () => {
    const key = await modelCacheKey();
    expect(key).toMatch(/^[0-9a-f]{64}$/);
    expect(modelDirFor(key, "/h")).toBe(`/h/models/smollm2-135m-instruct-${key.slice(0, 12)}`);
  });

  it("returns the prepared folder at once, logging 'model ready (cached)'", async () => {
    const dir = await findModelDir();
    expect(dir).toBe(modelDirFor(await modelCacheKey(), cachePaths().home));
    expect((await readManifest(dir)).source.key).toBe(await modelCacheKey());
    const lines: string[] = [];
    const t0 = Date.now();
    expect(await prepareModel({ log: (l) => lines.push(l) })).toBe(dir);
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(lines).toEqual([`model ready (cached): ${dir}`]);
  });

  it("findModelDir in an empty NEST_HOME throws model_not_prepared", async () => {
    const home = await mkdtemp(join(tmpdir(), "nest-home-"));
    try {
      const err = await findModelDir(home).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(NestError);
      expect((err as NestError).code).toBe("model_not_prepared");
      expect((err as NestError).message).toContain("nestlm setup");
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  });
});
