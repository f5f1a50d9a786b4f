/**
 * @module routes/playground
 * The playground web page (issue 8): `GET /` and its assets under `/playground/`, all held in
 * memory as string constants (no file reads, no Node-only imports, no external resources), so the
 * same code serves on Node and on Workers. The page calls `POST /v1/generate` of the same origin.
 *
 * @example
 * const app = createApp(deps);
 * registerPlayground(app); // GET /, /playground/app.js, /playground/sse.js, /playground/render.js, /playground/app.css
 */
import type { Context, Hono } from "hono";
import type { EdgeEnv } from "../env.ts";
import { PAGE_HTML } from "./playground/page-html.ts";
import { PAGE_CSS } from "./playground/page-css.ts";
import { SSE_JS } from "./playground/sse-js.ts";
import { RENDER_JS } from "./playground/render-js.ts";
import { APP_JS } from "./playground/app-js.ts";

/**
 * Content-Security-Policy of the page: scripts, styles and requests from the same origin only
 * (inline styles only through the CSSOM, which CSP allows).
 */
export const PLAYGROUND_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; " +
  "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** Asset path (below the app root) → [content type, body]. */
export const PLAYGROUND_ASSETS: Readonly<Record<string, readonly [string, string]>> = {
  "/playground/app.css": ["text/css; charset=utf-8", PAGE_CSS],
  "/playground/app.js": ["text/javascript; charset=utf-8", APP_JS],
  "/playground/render.js": ["text/javascript; charset=utf-8", RENDER_JS],
  "/playground/sse.js": ["text/javascript; charset=utf-8", SSE_JS],
};

function send(c: Context, type: string, body: string): Response {
  c.header("content-type", type);
  c.header("cache-control", "no-cache");
  c.header("x-content-type-options", "nosniff");
  return c.body(body);
}

/**
 * Adds the playground routes to `app`: `GET /` (HTML, with {@link PLAYGROUND_CSP}) and the
 * `GET /playground/*` assets of {@link PLAYGROUND_ASSETS}. No authentication: the page holds no
 * secret, the user types the API key, which stays in the browser's session storage.
 * @returns `app`, for chaining.
 */
export function registerPlayground(app: Hono<EdgeEnv>): Hono<EdgeEnv> {
  app.get("/", (c) => {
    c.header("content-security-policy", PLAYGROUND_CSP);
    c.header("referrer-policy", "no-referrer");
    return send(c, "text/html; charset=utf-8", PAGE_HTML);
  });
  for (const [path, [type, body]] of Object.entries(PLAYGROUND_ASSETS)) {
    app.get(path, (c) => send(c, type, body));
  }
  return app;
}
