/**
 * @module adapters/node/metrics
 * Prometheus metrics of the edge on Node (`prom-client`, Node-only: never imported by the Workers
 * bundle). {@link EdgeMetrics.instrument} wraps the app's `fetch`: it answers `GET /metrics` and
 * observes every other request and its response body as it streams to the client — the SSE events
 * of `/v1/generate` and of the OpenAI routes, or their JSON answers — without holding the body back.
 * Each metric, with its unit, is documented in docs/deploy.md ("Metrics").
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { createParser, type EventSourceMessage } from "eventsource-parser";
import { ModeSchema } from "@nest/shared/protocol/request";
import type { PoolState } from "../../route/pool-router.ts";

/** Latency buckets, seconds. */
export const EDGE_LATENCY_BUCKETS_S = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300];

/** Route label of a path (bounded set: the edge's routes, else `other`). */
export function edgeRouteLabel(path: string): string {
  const known = ["/v1/generate", "/v1/chat/completions", "/v1/completions", "/healthz", "/readyz", "/metrics", "/"];
  if (known.includes(path)) return path;
  if (path === "/v1/batches" || path.startsWith("/v1/batches/")) return "/v1/batches";
  if (path === "/v1/faq/warm" || path.startsWith("/v1/faq/")) return "/v1/faq";
  if (path.startsWith("/playground")) return "/";
  return "other";
}

/** Generation routes whose bodies carry a mode and whose answers carry usage. */
const GENERATION_ROUTES = new Set(["/v1/generate", "/v1/chat/completions", "/v1/completions"]);

interface Usage {
  prompt_tokens?: number;
  completion_tokens?: number;
  attributed_tokens?: number;
}

export interface EdgeMetricsOptions {
  /** The pools' state at scrape time (`PoolRouter.state`). */
  pools?: () => PoolState[];
  /** prom-client's process metrics, prefix `nest_edge_`. @defaultValue true */
  processMetrics?: boolean;
  nowMs?: () => number;
}

export class EdgeMetrics {
  readonly registry = new Registry();
  private readonly nowMs: () => number;
  readonly requests: Counter<"route" | "mode" | "status">;
  readonly duration: Histogram<"route" | "mode">;
  readonly timeToFirstToken: Histogram<"route" | "mode">;
  readonly completionTokens: Counter<"route" | "mode">;
  readonly promptTokens: Counter<"route" | "mode">;
  readonly attributedTokens: Counter<"route" | "mode">;
  readonly streamErrors: Counter<"route" | "mode" | "code">;
  readonly answerCache: Counter<"result">;
  readonly inflight: Gauge;

  constructor(opts: EdgeMetricsOptions = {}) {
    this.nowMs = opts.nowMs ?? (() => performance.now());
    const registers = [this.registry];
    if (opts.processMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: "nest_edge_" });
    const gen = ["route", "mode"] as const;
    this.requests = new Counter({
      name: "nest_edge_requests_total",
      help: "Requests answered, by route, request mode (generation routes; empty otherwise) and HTTP status",
      labelNames: ["route", "mode", "status"] as const,
      registers,
    });
    this.duration = new Histogram({
      name: "nest_edge_request_duration_seconds",
      help: "Seconds from a request's arrival to the end of its response body (a stream's last event)",
      labelNames: gen,
      buckets: EDGE_LATENCY_BUCKETS_S,
      registers,
    });
    this.timeToFirstToken = new Histogram({
      name: "nest_edge_time_to_first_token_seconds",
      help: "Seconds from a streamed generation's arrival to its first generated text (delta event / content chunk)",
      labelNames: gen,
      buckets: EDGE_LATENCY_BUCKETS_S,
      registers,
    });
    this.completionTokens = new Counter({
      name: "nest_edge_completion_tokens_total",
      help: "Generated tokens of answers sent (their usage)",
      labelNames: gen,
      registers,
    });
    this.promptTokens = new Counter({
      name: "nest_edge_prompt_tokens_total",
      help: "Prompt tokens of answers sent (their usage)",
      labelNames: gen,
      registers,
    });
    this.attributedTokens = new Counter({
      name: "nest_edge_attributed_tokens_total",
      help: "Generated tokens with provenance in answers sent (usage.attributed_tokens)",
      labelNames: gen,
      registers,
    });
    this.streamErrors = new Counter({
      name: "nest_edge_stream_errors_total",
      help: "Generations that failed after the stream started (an SSE error event), by error code",
      labelNames: ["route", "mode", "code"] as const,
      registers,
    });
    this.answerCache = new Counter({
      name: "nest_edge_answer_cache_total",
      help: "Generation answers by FAQ answer cache result (the x-nest-cache header: hit, miss)",
      labelNames: ["result"] as const,
      registers,
    });
    this.inflight = new Gauge({ name: "nest_edge_inflight_requests", help: "Requests whose response body has not ended yet", registers });
    const pools = opts.pools;
    if (pools) {
      new Gauge({
        name: "nest_edge_pool_outstanding_requests",
        help: "Decode requests this edge has in flight on each pool (what least-outstanding routing compares)",
        labelNames: ["pool"] as const,
        registers,
        collect() {
          this.reset();
          for (const p of pools()) this.set({ pool: p.url }, p.outstanding);
        },
      });
      new Gauge({
        name: "nest_edge_pool_up",
        help: "1 when the pool answered its last health check or call, 0 while it is marked down",
        labelNames: ["pool"] as const,
        registers,
        collect() {
          this.reset();
          for (const p of pools()) this.set({ pool: p.url }, p.healthy ? 1 : 0);
        },
      });
    }
  }

  /**
   * Wraps an app's `fetch`: `GET /metrics` answers Prometheus text; every other request is passed
   * on and observed.
   */
  instrument<A extends unknown[]>(
    fetch: (req: Request, ...rest: A) => Response | Promise<Response>,
  ): (req: Request, ...rest: A) => Promise<Response> {
    return async (req, ...rest) => {
      const url = new URL(req.url);
      if (req.method === "GET" && url.pathname === "/metrics") {
        return new Response(await this.registry.metrics(), { headers: { "content-type": this.registry.contentType } });
      }
      const t0 = this.nowMs();
      const route = edgeRouteLabel(url.pathname);
      const mode = GENERATION_ROUTES.has(route) && req.method === "POST" ? await requestMode(req, route) : "";
      this.inflight.inc();
      let res: Response;
      try {
        res = await fetch(req, ...rest);
      } catch (err) {
        this.inflight.dec();
        this.requests.inc({ route, mode, status: "500" });
        throw err;
      }
      this.requests.inc({ route, mode, status: String(res.status) });
      const cache = res.headers.get("x-nest-cache");
      if (cache === "hit" || cache === "miss") this.answerCache.inc({ result: cache });
      const labels = { route, mode };
      let ended = false;
      const end = () => {
        if (ended) return;
        ended = true;
        this.inflight.dec();
        this.duration.observe(labels, (this.nowMs() - t0) / 1000);
      };
      if (!res.body) {
        end();
        return res;
      }
      const type = res.headers.get("content-type") ?? "";
      const watch =
        GENERATION_ROUTES.has(route) && res.ok
          ? type.startsWith("text/event-stream")
            ? this.sseWatcher(labels, t0)
            : type.includes("json")
              ? this.jsonWatcher(labels)
              : undefined
          : undefined;
      // Pull-through: each chunk goes to the client as it comes; the end, an error or the
      // client's cancel ends the observation once.
      const reader = res.body.getReader();
      const body = new ReadableStream<Uint8Array>({
        async pull(ctl) {
          try {
            const { value, done } = await reader.read();
            if (done) {
              watch?.end();
              end();
              ctl.close();
              return;
            }
            watch?.push(value);
            ctl.enqueue(value);
          } catch (err) {
            end();
            ctl.error(err);
          }
        },
        cancel(reason) {
          end();
          return reader.cancel(reason);
        },
      });
      return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
    };
  }

  private recordUsage(labels: { route: string; mode: string }, u: Usage | undefined): void {
    if (!u) return;
    if (typeof u.completion_tokens === "number") this.completionTokens.inc(labels, u.completion_tokens);
    if (typeof u.prompt_tokens === "number") this.promptTokens.inc(labels, u.prompt_tokens);
    if (typeof u.attributed_tokens === "number") this.attributedTokens.inc(labels, u.attributed_tokens);
  }

  /** SSE answers: `/v1/generate` events (delta, done, error) or OpenAI chunks (`data: {...}`). */
  private sseWatcher(labels: { route: string; mode: string }, t0: number): { push(c: Uint8Array): void; end(): void } {
    const decoder = new TextDecoder();
    let first = true;
    const firstToken = () => {
      if (!first) return;
      first = false;
      this.timeToFirstToken.observe(labels, (this.nowMs() - t0) / 1000);
    };
    const onEvent = (m: EventSourceMessage) => {
      if (m.data === "[DONE]") return;
      let data: Record<string, unknown>;
      try {
        data = JSON.parse(m.data) as Record<string, unknown>;
      } catch {
        return;
      }
      if (labels.route === "/v1/generate") {
        if (m.event === "delta" && typeof data.text === "string" && data.text.length > 0) firstToken();
        else if (m.event === "done") this.recordUsage(labels, data.usage as Usage);
        else if (m.event === "error") this.streamErrors.inc({ ...labels, code: errorCode(data) });
        return;
      }
      // OpenAI chunks: text in choices[0].delta.content (chat) or choices[0].text; NEST's full
      // usage in the finishing chunk's `nest.usage`; an error chunk `{error: {...}}`.
      if (data.error) {
        this.streamErrors.inc({ ...labels, code: errorCode(data) });
        return;
      }
      const choice = (data.choices as { delta?: { content?: string }; text?: string }[] | undefined)?.[0];
      if ((choice?.delta?.content ?? choice?.text ?? "").length > 0) firstToken();
      const nest = data.nest as { usage?: Usage } | undefined;
      if (nest?.usage) this.recordUsage(labels, nest.usage);
    };
    const parser = createParser({ onEvent });
    return { push: (c) => parser.feed(decoder.decode(c, { stream: true })), end: () => parser.feed(decoder.decode()) };
  }

  /** JSON answers: `{done: {usage}}` (/v1/generate) or `{nest: {usage}}` (OpenAI routes). */
  private jsonWatcher(labels: { route: string; mode: string }): { push(c: Uint8Array): void; end(): void } {
    const decoder = new TextDecoder();
    let text = "";
    return {
      push: (c) => {
        if (text.length < 4 * 1024 * 1024) text += decoder.decode(c, { stream: true });
      },
      end: () => {
        try {
          const body = JSON.parse(text + decoder.decode()) as { done?: { usage?: Usage }; nest?: { usage?: Usage } };
          this.recordUsage(labels, body.done?.usage ?? body.nest?.usage);
        } catch {
          /* not a generation answer */
        }
      },
    };
  }
}

function errorCode(data: Record<string, unknown>): string {
  const code = (data.error as { code?: unknown } | undefined)?.code;
  return typeof code === "string" && /^[a-z_]{1,40}$/.test(code) ? code : "unknown";
}

/** The mode a generation request asks for (`mode`, or `nest.mode` on the OpenAI routes; default `nest`). */
async function requestMode(req: Request, route: string): Promise<string> {
  // Only bodies the app would read (≤ 64 KiB, declared length); the label set stays the modes.
  const length = Number(req.headers.get("content-length") ?? Number.NaN);
  if (!(length <= 64 * 1024)) return "";
  try {
    const body = (await req.clone().json()) as { mode?: unknown; nest?: { mode?: unknown } };
    const mode = route === "/v1/generate" ? body.mode : body.nest?.mode;
    if (mode === undefined) return "nest";
    return ModeSchema.safeParse(mode).success ? (mode as string) : "invalid";
  } catch {
    return "invalid";
  }
}
