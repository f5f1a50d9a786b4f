/**
 * The Workers build of the edge: `wrangler deploy --dry-run` bundles `edge/src/adapters/workers.ts`
 * (per wrangler.toml) without Node-only code.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";

const outdir = mkdtempSync(join(tmpdir(), "nest-wrangler-"));
afterAll(() => rmSync(outdir, { recursive: true, force: true }));

describe("wrangler bundle", () => {
  it("bundles the edge with no LanceDB, onnxruntime or node: imports", () => {
    const log = execFileSync("npx", ["wrangler", "deploy", "--dry-run", "--outdir", outdir], {
      encoding: "utf8",
      env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "1" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    expect(log).toContain("--dry-run: exiting now.");
    expect(log).toContain('env.NEST_POOL_URL ("http://127.0.0.1:8788")');
    const bundle = readFileSync(join(outdir, "workers.js"), "utf8");
    expect(bundle).toContain("/v1/generate");
    for (const banned of ["@lancedb", "onnxruntime", "apache-arrow", '"node:', "'node:"]) {
      expect(bundle.includes(banned), banned).toBe(false);
    }
  });
});
