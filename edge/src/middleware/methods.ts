/**
 * @module middleware/methods
 * Which methods a path answers to, for `405 Method Not Allowed` + `Allow` and for `OPTIONS`
 * (RFC 9110 §15.5.6: a 405 must list the allowed methods). Read from the app's own route table, so
 * it cannot drift from the routes. Worker-safe.
 */
import type { Env, Hono } from "hono";

/** Route pattern (`/v1/batches/:id/results`, `*`) → a RegExp over whole paths. */
function patternRegExp(path: string): RegExp {
  const re = path
    .split("/")
    .map((seg) => (seg === "*" ? ".*" : seg.startsWith(":") ? "[^/]+" : seg.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")))
    .join("/");
  return new RegExp(`^${re}/?$`);
}

const tables = new WeakMap<object, { method: string; re: RegExp }[]>();

/**
 * The methods some route of `app` answers on `path`, sorted, `HEAD` added beside `GET` (Hono
 * answers `HEAD` with the `GET` handler) and `OPTIONS` added when any is found; `[]` for a path no
 * route matches. The table is built on the first call (after every route is registered).
 */
export function allowedMethods<E extends Env>(app: Hono<E>, path: string): string[] {
  let table = tables.get(app);
  if (!table) {
    table = app.routes.filter((r) => r.method !== "ALL").map((r) => ({ method: r.method, re: patternRegExp(r.path) }));
    tables.set(app, table);
  }
  const methods = new Set(table.filter((r) => r.re.test(path)).map((r) => r.method));
  if (methods.size === 0) return [];
  if (methods.has("GET")) methods.add("HEAD");
  methods.add("OPTIONS");
  return [...methods].sort();
}
