/**
 * @module metrics
 * Prometheus metrics of a gpu-worker process (HTTP pool or batch consumer), with `prom-client`:
 * one {@link Registry} per process, served as Prometheus text on `GET /metrics`. Every metric is
 * documented, with its unit, in `docs/deploy.md` ("Metrics").
 *
 * What is observed, and where:
 * - requests by route, mode and HTTP status ({@link WorkerMetrics.middleware} on the Hono app);
 * - each decode job's event stream ({@link WorkerMetrics.observeDecode}): time to first token and
 *   total latency (from the job's arrival, queue wait included), then the `done` event's usage
 *   (completion tokens, LM forward passes, drafted / accepted tokens and drafts, attributed tokens,
 *   passage-key cache hits) and the outcome (`stop`, `length`, an error code, or `cancelled`);
 * - in-flight decode jobs (running + queued on the inference host);
 * - batch queue depth by BullMQ state ({@link queueDepthSource}): `getJobCounts('wait',
 *   'prioritized', ...)`, read at scrape time; BullMQ keeps prioritized jobs in a sorted set apart
 *   from the `wait` list, so both are exported and the KEDA trigger sums them.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { MiddlewareHandler } from "hono";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import type { GenerateEvent } from "@nest/shared/protocol/events";
import type { DecodeJob } from "@nest/shared/protocol/worker";
import { ITEM_QUEUE } from "./batch/config.ts";

/** Buckets of the latency histograms, in seconds (a 1-token answer on CPU to a 1,024-token one). */
export const LATENCY_BUCKETS_S = [0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300];
/** Buckets of the accepted span length histogram, in tokens (spec §6: spans are at most `max_span` ≤ 256). */
export const SPAN_LENGTH_BUCKETS = [1, 2, 3, 4, 6, 8, 12, 16, 32, 64, 128, 256];
/** Buckets of the attribution ratio histogram (a fraction in [0, 1]). */
export const RATIO_BUCKETS = [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1];
/** Longest wait for the queue counts during a scrape, ms (Prometheus' default scrape timeout is 10 s). */
export const QUEUE_SCRAPE_TIMEOUT_MS = 2000;
/** BullMQ states exported as queue depth (`waiting` is BullMQ's name for the `wait` list). */
export const QUEUE_STATES = ["waiting", "prioritized", "active", "delayed", "failed"] as const;

/** Where a decode job came from: the HTTP route `/v1/decode` or a batch item. */
export type DecodeSource = "http" | "batch";

/** Counts of a batch queue by BullMQ state. */
export interface QueueDepthSource {
  /** Job counts by state (keys of {@link QUEUE_STATES}); rejects when Redis cannot be reached. */
  counts(): Promise<Partial<Record<(typeof QUEUE_STATES)[number], number>>>;
  close(): Promise<void>;
}

export interface WorkerMetricsOptions {
  /** Also export prom-client's process metrics (CPU, memory, event-loop lag) with prefix `nest_worker_`. @defaultValue true */
  processMetrics?: boolean;
  /** Running and queued jobs of the inference host(s), read at scrape time. */
  load?: () => { running: number; queued: number };
  /** Batch queue depth, read at scrape time; absent = no `nest_batch_queue_jobs`. */
  queueDepth?: QueueDepthSource;
  /** Clock in ms (tests); default `performance.now`. */
  nowMs?: () => number;
}

/** Route label of a request path: the worker's routes, else `other` (keeps label cardinality bounded). */
export function routeLabel(path: string): string {
  if (path === "/v1/decode" || path === "/v1/retrieve" || path === "/healthz" || path === "/readyz" || path === "/metrics") return path;
  if (path === "/v1/batches" || path.startsWith("/v1/batches/")) return "/v1/batches";
  return "other";
}

/** The metrics of one gpu-worker process. */
export class WorkerMetrics {
  readonly registry = new Registry();
  private readonly nowMs: () => number;
  /** Mode of a request, set by its handler once the body is parsed (read by the middleware). */
  private readonly modes = new WeakMap<Request, string>();

  readonly requests: Counter<"route" | "mode" | "status">;
  readonly decodeOutcomes: Counter<"source" | "mode" | "outcome">;
  readonly timeToFirstToken: Histogram<"source" | "mode">;
  readonly decodeDuration: Histogram<"source" | "mode">;
  readonly promptTokens: Counter<"source" | "mode">;
  readonly completionTokens: Counter<"source" | "mode">;
  readonly lmForwardPasses: Counter<"source" | "mode">;
  readonly draftedTokens: Counter<"source" | "mode">;
  readonly acceptedTokens: Counter<"source" | "mode">;
  readonly drafts: Counter<"source" | "mode">;
  readonly acceptedSpanLength: Histogram<"source" | "mode">;
  readonly meanAcceptanceLength: Gauge<"mode">;
  readonly attributedTokens: Counter<"source" | "mode">;
  readonly attributionRatio: Histogram<"source" | "mode">;
  readonly passageKeyCache: Counter<"result">;
  readonly inflight: Gauge<"source">;
  readonly inferenceJobs: Gauge<"state">;
  readonly citedTokens: Counter<"source" | "mode">;
  private load: (() => { running: number; queued: number }) | undefined;
  readonly queueJobs: Gauge<"queue" | "state"> | undefined;

  /** Accepted tokens and drafts since start, by mode, for {@link meanAcceptanceLength}. */
  private readonly acceptance = new Map<string, { accepted: number; drafts: number }>();

  constructor(opts: WorkerMetricsOptions = {}) {
    this.nowMs = opts.nowMs ?? (() => performance.now());
    const registers = [this.registry];
    if (opts.processMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: "nest_worker_" });
    const decodeLabels = ["source", "mode"] as const;

    this.requests = new Counter({
      name: "nest_worker_requests_total",
      help: "HTTP requests answered, by route, request mode (empty when none) and HTTP status (a decode stream counts 200 when it starts)",
      labelNames: ["route", "mode", "status"] as const,
      registers,
    });
    this.decodeOutcomes = new Counter({
      name: "nest_worker_decode_outcomes_total",
      help: "Decode jobs finished, by outcome: the done event's finish_reason (stop, length), the error event's code, or cancelled (client gone)",
      labelNames: ["source", "mode", "outcome"] as const,
      registers,
    });
    this.timeToFirstToken = new Histogram({
      name: "nest_worker_time_to_first_token_seconds",
      help: "Seconds from a decode job's arrival (queue wait included) to its first delta event",
      labelNames: decodeLabels,
      buckets: LATENCY_BUCKETS_S,
      registers,
    });
    this.decodeDuration = new Histogram({
      name: "nest_worker_decode_duration_seconds",
      help: "Seconds from a decode job's arrival (queue wait included) to its done event",
      labelNames: decodeLabels,
      buckets: LATENCY_BUCKETS_S,
      registers,
    });
    const counter = (name: string, help: string) => new Counter({ name, help, labelNames: decodeLabels, registers });
    this.promptTokens = counter("nest_worker_prompt_tokens_total", "Prompt tokens of finished decode jobs (after the chat template)");
    this.completionTokens = counter("nest_worker_completion_tokens_total", "Tokens generated by finished decode jobs");
    this.lmForwardPasses = counter("nest_worker_lm_forward_passes_total", "LM forward passes of finished decode jobs (prefill excluded)");
    this.draftedTokens = counter("nest_worker_drafted_tokens_total", "Draft tokens proposed from the token store and verified (spec §6)");
    this.acceptedTokens = counter(
      "nest_worker_accepted_tokens_total",
      "Draft tokens accepted by relaxed speculative verification (spec §6)",
    );
    this.drafts = counter("nest_worker_drafts_total", "Drafts (spans) verified");
    this.attributedTokens = counter(
      "nest_worker_attributed_tokens_total",
      "Generated tokens with provenance (usage.attributed_tokens: accepted draft tokens and neighbour-carried tokens, spec §7)",
    );
    this.citedTokens = counter("nest_worker_cited_tokens_total", "Generated tokens inside cited deltas (usage.cited_tokens)");
    this.acceptedSpanLength = new Histogram({
      name: "nest_worker_accepted_span_length_tokens",
      help: "Per decode job with at least one draft: accepted tokens / drafts, the mean accepted span length, in tokens",
      labelNames: decodeLabels,
      buckets: SPAN_LENGTH_BUCKETS,
      registers,
    });
    this.attributionRatio = new Histogram({
      name: "nest_worker_attribution_ratio",
      help: "Per decode job that generated tokens: attributed / completion tokens (a fraction in [0, 1])",
      labelNames: decodeLabels,
      buckets: RATIO_BUCKETS,
      registers,
    });
    const acceptance = this.acceptance;
    this.meanAcceptanceLength = new Gauge({
      name: "nest_worker_mean_acceptance_length_tokens",
      help: "Accepted tokens / drafts since the process started, by mode, in tokens (rate() of the two counters gives it over a window)",
      labelNames: ["mode"] as const,
      registers,
      collect() {
        this.reset();
        for (const [mode, a] of acceptance) if (a.drafts > 0) this.set({ mode }, a.accepted / a.drafts);
      },
    });
    this.passageKeyCache = new Counter({
      name: "nest_worker_passage_key_cache_lookups_total",
      help: "Passages of token stores by where their keys came from: hit (passage-key cache: memory, disk or corpus key store) or miss (encoded by the LM; usage.encoded_passages)",
      labelNames: ["result"] as const,
      registers,
    });
    this.inflight = new Gauge({
      name: "nest_worker_inflight_requests",
      help: "Decode jobs accepted and not yet finished (running or queued), by source",
      labelNames: ["source"] as const,
      registers,
    });
    this.inflight.set({ source: "http" }, 0);
    this.load = opts.load;
    const self = this;
    this.inferenceJobs = new Gauge({
      name: "nest_worker_inference_jobs",
      help: "Jobs on the inference host(s) at scrape time, by state (running, queued)",
      labelNames: ["state"] as const,
      registers,
      collect() {
        const l = self.load?.() ?? { running: 0, queued: 0 };
        this.set({ state: "running" }, l.running);
        this.set({ state: "queued" }, l.queued);
      },
    });
    const depth = opts.queueDepth;
    this.queueJobs = depth
      ? new Gauge({
          name: "nest_batch_queue_jobs",
          help: "Batch item jobs in the BullMQ queue at scrape time, by state (waiting + prioritized = backlog); absent when Redis cannot be read",
          labelNames: ["queue", "state"] as const,
          registers,
          async collect() {
            this.reset();
            let counts: Awaited<ReturnType<QueueDepthSource["counts"]>>;
            let timer: ReturnType<typeof setTimeout> | undefined;
            try {
              counts = await Promise.race([
                depth.counts(),
                new Promise<never>(
                  (_, reject) =>
                    (timer = setTimeout(() => reject(new Error("queue depth: Redis did not answer in 2 s")), QUEUE_SCRAPE_TIMEOUT_MS)),
                ),
              ]);
            } catch {
              return; // no sample: KEDA then keeps the last scale (or its fallback), never scales on a wrong 0
            } finally {
              clearTimeout(timer);
            }
            for (const state of QUEUE_STATES) this.set({ queue: ITEM_QUEUE, state }, counts[state] ?? 0);
          },
        })
      : undefined;
  }

  /** Prometheus text of every metric (content type {@link contentType}). */
  metrics(): Promise<string> {
    return this.registry.metrics();
  }

  /** `text/plain; version=0.0.4; charset=utf-8`. */
  get contentType(): string {
    return this.registry.contentType;
  }

  /** Reads the inference host's load at each scrape (`nest_worker_inference_jobs`). */
  bindLoad(load: () => { running: number; queued: number }): void {
    this.load = load;
  }

  /** `decoder` with every job's events observed as `source` (e.g. the batch consumer's decoder). */
  observed<D extends { run(job: DecodeJob, signal?: AbortSignal): AsyncIterable<GenerateEvent> }>(
    decoder: D,
    source: DecodeSource,
  ): { run(job: DecodeJob, signal?: AbortSignal): AsyncIterable<GenerateEvent> } {
    return { run: (job, signal) => this.observeDecode(job.request.mode, decoder.run(job, signal), source) };
  }

  /** Labels the request `raw` with its mode (called by the handler once the body is parsed). */
  tagMode(raw: Request, mode: string): void {
    this.modes.set(raw, mode);
  }

  /** Counts every request once answered: `nest_worker_requests_total{route, mode, status}`. */
  middleware(): MiddlewareHandler {
    return async (c, next) => {
      await next();
      this.requests.inc({ route: routeLabel(c.req.path), mode: this.modes.get(c.req.raw) ?? "", status: String(c.res.status) });
    };
  }

  /**
   * Observes a decode job's events as they pass (they are yielded unchanged). Wrap the job's
   * events as it arrives: from the first pull (the stream starting) the job counts as in flight
   * and its latencies run; it stops counting when the stream ends, fails or is abandoned.
   */
  async *observeDecode(mode: string, events: AsyncIterable<GenerateEvent>, source: DecodeSource = "http"): AsyncGenerator<GenerateEvent> {
    const t0 = this.nowMs();
    const labels = { source, mode };
    let outcome = "cancelled";
    let firstToken = true;
    this.inflight.inc({ source });
    try {
      for await (const e of events) {
        if (e.event === "delta" && firstToken) {
          firstToken = false;
          this.timeToFirstToken.observe(labels, (this.nowMs() - t0) / 1000);
        } else if (e.event === "done") {
          outcome = e.data.finish_reason;
          this.decodeDuration.observe(labels, (this.nowMs() - t0) / 1000);
          this.recordUsage(labels, e.data.usage);
        } else if (e.event === "error") {
          outcome = e.data.error.code;
        }
        yield e;
      }
    } finally {
      this.inflight.dec({ source });
      this.decodeOutcomes.inc({ ...labels, outcome });
    }
  }

  private recordUsage(labels: { source: DecodeSource; mode: string }, u: Extract<GenerateEvent, { event: "done" }>["data"]["usage"]): void {
    this.promptTokens.inc(labels, u.prompt_tokens);
    this.completionTokens.inc(labels, u.completion_tokens);
    this.lmForwardPasses.inc(labels, u.lm_forward_passes);
    this.draftedTokens.inc(labels, u.drafted_tokens);
    this.acceptedTokens.inc(labels, u.accepted_tokens);
    this.drafts.inc(labels, u.num_drafts ?? 0);
    this.attributedTokens.inc(labels, u.attributed_tokens);
    this.citedTokens.inc(labels, (u as { cited_tokens?: number }).cited_tokens ?? 0);
    if ((u.num_drafts ?? 0) > 0) this.acceptedSpanLength.observe(labels, u.accepted_tokens / u.num_drafts);
    if (u.attribution_ratio !== null) this.attributionRatio.observe(labels, u.attribution_ratio);
    const a = this.acceptance.get(labels.mode) ?? { accepted: 0, drafts: 0 };
    a.accepted += u.accepted_tokens;
    a.drafts += u.num_drafts ?? 0;
    this.acceptance.set(labels.mode, a);
    // Passages not encoded by the LM came from the passage-key cache (memory, disk or the corpus
    // key store): usage.encoded_passages counts the misses.
    const encoded = Math.min(u.encoded_passages ?? u.store_passages, u.store_passages);
    const cached = u.store_passages - encoded;
    if (cached > 0) this.passageKeyCache.inc({ result: "hit" }, cached);
    if (u.store_passages - cached > 0) this.passageKeyCache.inc({ result: "miss" }, u.store_passages - cached);
  }
}

/**
 * A BullMQ queue handle that only counts the batch item queue (`<prefix>:batch-items`), on its
 * own Redis connection (one attempt per command, so a scrape during an outage fails fast).
 */
export function queueDepthSource(redisUrl: string, prefix: string): QueueDepthSource {
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  redis.on("error", () => {}); // reported by the scrape (no sample), not as an unhandled error
  const queue = new Queue(ITEM_QUEUE, { connection: redis, prefix });
  queue.on("error", () => {});
  return {
    counts: () => queue.getJobCounts(...QUEUE_STATES),
    close: async () => {
      await queue.close();
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}
