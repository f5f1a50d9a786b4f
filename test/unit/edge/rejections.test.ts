/**
 * edge/src/rejections.ts (issue 17): reasons are never `undefined`, failures of unawaited work are
 * logged; and the Worker sources keep the two rules (no argument-less cancel/abort/error, no
 * silent `.catch(() => {})`, no `pipeThrough` over a body that is cancelled early).
 */
import { readFile, readdir } from "node:fs/promises";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { NestError } from "@nest/shared/protocol/errors";
import { logRejection, reasonError, stopReason } from "@nest/edge/rejections";

const EDGE_SRC = fileURLToPath(new URL("../../../edge/src", import.meta.url));

async function workerSources(dir = EDGE_SRC): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) {
      // Node-only adapters and the playground's browser code (strings served to the page) are not Worker code.
      if (p === join(EDGE_SRC, "adapters/node") || p === join(EDGE_SRC, "routes/playground")) continue;
      out.push(...(await workerSources(p)));
    } else if (e.name.endsWith(".ts")) out.push(p);
  }
  return out;
}

describe("reasonError", () => {
  it("names a missing reason instead of printing `undefined`", () => {
    const e = reasonError(undefined, "read-sse: cancel of the SSE body");
    expect(e).toBeInstanceOf(NestError);
    expect([e.code, e.message]).toEqual(["internal", "read-sse: cancel of the SSE body failed without a reason (undefined)"]);
    expect(reasonError(null, "x").message).toBe("x failed without a reason (null)");
  });
  it("keeps a NestError and wraps an Error with it as cause", () => {
    const n = new NestError("at_capacity", "busy");
    expect(reasonError(n, "x")).toBe(n);
    const cause = new TypeError("boom");
    const e = reasonError(cause, "x");
    expect([e.code, e.message, e.cause]).toEqual(["internal", "boom", cause]);
  });
});

describe("logRejection", () => {
  it("logs a rejection with what failed and resolves; the edge's own stop reason is not a failure", async () => {
    const lines: string[] = [];
    await expect(logRejection(Promise.reject(undefined), "sse: closing the source", (l) => lines.push(l))).resolves.toBeUndefined();
    await logRejection(Promise.reject(new NestError("upstream_unavailable", "pool gone")), "generation: token charge", (l) =>
      lines.push(l),
    );
    await logRejection(Promise.reject(stopReason("client disconnected")), "read-sse: cancel of the SSE body", (l) => lines.push(l));
    await logRejection(Promise.resolve(7), "quiet", (l) => lines.push(l));
    expect(lines).toEqual([
      "sse: closing the source failed: internal: sse: closing the source failed without a reason (undefined)",
      "generation: token charge failed: upstream_unavailable: pool gone",
    ]);
    expect(stopReason("client disconnected")).toMatchObject({ code: "cancelled", status: 499 });
  });
});

describe("Worker sources (edge/src without adapters/node)", () => {
  it("never cancel, abort or error a stream or request without a reason, swallow silently, or pipeThrough", async () => {
    const offences: string[] = [];
    for (const file of await workerSources()) {
      const lines = (await readFile(file, "utf8")).split("\n");
      lines.forEach((line, i) => {
        if (/^\s*(\*|\/\*\*|\/\/)/.test(line)) return; // TSDoc and comment lines
        const code = line.replace(/\/\/.*$/, "");
        if (/\.(cancel|abort|error)\(\s*\)/.test(code) || /\.catch\(\(\) => \{\}\)/.test(code) || /\.pipeThrough\(/.test(code)) {
          offences.push(`${relative(EDGE_SRC, file)}:${i + 1}: ${line.trim()}`);
        }
      });
    }
    expect(offences).toEqual([]);
  });
});
