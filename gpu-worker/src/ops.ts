/**
 * @module ops
 * What an orchestrator asks a gpu-worker process, unsigned: `GET /healthz` (liveness: the event
 * loop answers), `GET /readyz` (readiness: model loaded, one warm-up generation done, not
 * draining) and `GET /metrics` (Prometheus text, {@link WorkerMetrics}). As a Hono middleware on
 * the HTTP pool's app ({@link opsRoutes}), or as a small `node:http` server for the batch consumer
 * ({@link serveOps}).
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import closeWithGrace from "close-with-grace";
import type { MiddlewareHandler } from "hono";
import type { WorkerMetrics } from "./metrics.ts";

/** Readiness states: `starting` until warm, `ready`, then `draining` from SIGTERM on. */
export type ReadinessState = "starting" | "ready" | "draining";

/** The readiness of one process, flipped by its main. */
export class Readiness {
  private current: ReadinessState = "starting";

  get state(): ReadinessState {
    return this.current;
  }

  get ready(): boolean {
    return this.current === "ready";
  }

  /** Model loaded and warm: `/readyz` answers 200 (unless draining already). */
  markReady(): void {
    if (this.current === "starting") this.current = "ready";
  }

  /** From now on `/readyz` answers 503: the orchestrator sends no new work. */
  drain(): void {
    this.current = "draining";
  }
}

export interface OpsDeps {
  readonly metrics?: WorkerMetrics;
  readonly readiness?: Readiness;
}

/** `/readyz` answer: 200 `{status: "ready"}`, else 503 `{status: "starting" | "draining"}`. */
function readyz(readiness: Readiness | undefined): { status: number; body: { status: ReadinessState } } {
  const state = readiness?.state ?? "ready";
  return { status: state === "ready" ? 200 : 503, body: { status: state } };
}

/**
 * Answers `GET /metrics` and `GET /readyz` before any other middleware sees them (they need no
 * signature); everything else goes on. Register it before the signature check.
 */
export function opsRoutes(deps: OpsDeps): MiddlewareHandler {
  return async (c, next) => {
    if (c.req.method === "GET" && c.req.path === "/metrics" && deps.metrics) {
      return c.body(await deps.metrics.metrics(), 200, { "content-type": deps.metrics.contentType });
    }
    if (c.req.method === "GET" && c.req.path === "/readyz") {
      const r = readyz(deps.readiness);
      return c.json(r.body, r.status as 200);
    }
    return next();
  };
}

/**
 * Serves `/healthz`, `/readyz` and `/metrics` on `host:port` (the batch consumer's probe and scrape
 * port). Other paths: 404.
 * @returns the bound URL and a close function
 * @throws the listen error (e.g. `EADDRINUSE`)
 */
export async function serveOps(port: number, host: string, deps: OpsDeps): Promise<{ url: string; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
    };
    if (req.method !== "GET") return json(405, { error: { code: "method_not_allowed", message: "GET only" } });
    if (path === "/healthz") return json(200, { status: "ok" });
    if (path === "/readyz") {
      const r = readyz(deps.readiness);
      return json(r.status, r.body);
    }
    if (path === "/metrics" && deps.metrics) {
      const metrics = deps.metrics;
      metrics.metrics().then(
        (text) => res.writeHead(200, { "content-type": metrics.contentType }).end(text),
        (err: unknown) => json(500, { error: { code: "internal", message: (err as Error).message } }),
      );
      return;
    }
    json(404, { error: { code: "not_found", message: `no route GET ${path}` } });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  const { port: bound } = server.address() as AddressInfo;
  return {
    url: `http://${host.includes(":") ? `[${host}]` : host}:${bound}`,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/**
 * Graceful shutdown of a process's main (close-with-grace): on SIGTERM, SIGINT (and the other
 * terminating signals), an uncaught exception or an unhandled rejection, logs `draining`, awaits
 * `close` (running work finishes; no time limit here, the orchestrator's termination grace period
 * is the limit) and exits 0, or 1 after an error; a second signal exits 1 at once.
 * @param name the process, in log lines (`gpu-worker stopped`)
 * @param draining what draining means for it, in the log line
 * @param close stops taking work and resolves when the running work has finished
 */
export function drainOnSignals(name: string, draining: string, close: () => Promise<unknown>, log: (line: string) => void): void {
  closeWithGrace(
    {
      delay: false,
      logger: { error: (m: unknown) => log(`${name}: ${m instanceof Error ? m.message : String(m)}`) },
      onSecondSignal: (signal: string) => log(`${signal} again: exiting without draining`),
      onSecondError: (e: unknown) => log(`${name}: ${e instanceof Error ? e.message : String(e)} (while draining): exiting`),
    },
    async ({ signal, err }) => {
      if (err) log(`${name}: ${err.message}`);
      if (signal === undefined && err === undefined) return; // the event loop ran empty
      log(`${signal ?? "error"}: draining (${draining})`);
      await close();
      log(`${name} stopped`);
    },
  );
}
