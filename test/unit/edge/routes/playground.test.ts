/**
 * The playground routes on a bare Hono app: the page and its assets, their content types, the CSP,
 * and that nothing refers to another origin.
 */
import { describe, expect, it } from "vitest";
import { Hono } from "hono";
import { PLAYGROUND_ASSETS, PLAYGROUND_CSP, registerPlayground } from "@nest/edge/routes/playground";

const app = registerPlayground(new Hono());

describe("registerPlayground", () => {
  it("serves the page at / with its CSP and the form controls", async () => {
    const res = await app.request("/");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/html; charset=utf-8");
    expect(res.headers.get("content-security-policy")).toBe(PLAYGROUND_CSP);
    const html = await res.text();
    for (const id of ["question", "mode", "gamma", "passages", "max-new-tokens", "api-key", "compare", "mode-b", "source-list"]) {
      expect(html).toContain(`id="${id}"`);
    }
    expect(html).toContain('<option value="nest" selected>nest</option>');
    expect(html).toContain('id="passages" name="passages" type="number" min="1" max="100" step="1" value="40"');
    expect(html).toContain('max="1024" step="1" value="128"');
    expect(html).toContain('<script type="module" src="playground/app.js"></script>');
  });

  it("serves the four assets with their content types", async () => {
    expect(Object.keys(PLAYGROUND_ASSETS).sort()).toEqual([
      "/playground/app.css",
      "/playground/app.js",
      "/playground/render.js",
      "/playground/sse.js",
    ]);
    for (const [path, [type, body]] of Object.entries(PLAYGROUND_ASSETS)) {
      const res = await app.request(path);
      expect(res.status, path).toBe(200);
      expect(res.headers.get("content-type")).toBe(type);
      expect(await res.text()).toBe(body);
    }
  });

  it("refers to no other origin", () => {
    const all = [PLAYGROUND_CSP, ...Object.values(PLAYGROUND_ASSETS).map(([, b]) => b)];
    for (const text of all) expect(text).not.toMatch(/https?:\/\/|\/\/[a-z0-9.-]+\.[a-z]{2,}\//i);
  });
});
