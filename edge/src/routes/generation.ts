/**
 * @module routes/generation
 * One generation as an event sequence, shared by `POST /v1/generate` and the OpenAI-compatible
 * routes: FAQ cache lookup, then the generation pipeline (`@nest/shared/generation/pipeline`:
 * first-stage retrieval on the edge, nest-algorithm.md §1, and the decode job on the gpu-worker
 * pool), and the cache fill and token charge when it finishes. Worker-safe.
 */
import { retrievalQuery, type GenerateRequest } from "@nest/shared/protocol/request";
import type { GenerateEvent } from "@nest/shared/protocol/events";
import { NestError } from "@nest/shared/protocol/errors";
import type { PassageIndex } from "@nest/shared/retrieve/passage-index";
import { decodeJob, generationEvents, requestIndex, retrieve } from "@nest/shared/generation/pipeline";
import { DOCUMENTS_CORPUS, estimateDocumentTokens } from "@nest/shared/protocol/documents";
import type { DecodeClient } from "../route/pool-client.ts";
import { faqCacheKey, type FaqCache } from "../cache/faq-cache.ts";
import { authedKey, type AuthedKey } from "../middleware/keys.ts";
import { logRejection, stopReason } from "../rejections.ts";
import type { Context } from "hono";

/** What a generation needs. */
export interface GenerateDeps {
  /** The passage index of a corpus, or `undefined` when the corpus is unknown (→ 404). */
  indexFor(corpus: string): Promise<PassageIndex | undefined>;
  /** The gpu-worker pool (one client or a router over several). */
  pool: DecodeClient;
  log?: (line: string) => void;
  /** FAQ answer cache; absent = no caching (`x-nest-cache: miss` on every answer). */
  faqCache?: FaqCache;
  /** Version (hash) of a corpus's current content; `undefined` = unknown, the answer is not cached. */
  corpusVersion?(corpus: string): Promise<string | undefined>;
  /** Milliseconds between SSE heartbeat comments while nothing else is sent (default 2000). */
  heartbeatMs?: number;
}

/** A started generation. `events` yields `retrieval`, `delta`*, then `done` or `error`. */
export interface Generation {
  cache: "hit" | "miss";
  events: AsyncIterable<GenerateEvent>;
}

async function cacheKeyFor(deps: GenerateDeps, req: GenerateRequest): Promise<string | undefined> {
  if (!deps.faqCache || !deps.corpusVersion) return undefined;
  // A request's documents are its corpus: their hash is in the key (faqCacheKey).
  const [corpusVersion, model] = await Promise.all([
    req.documents ? DOCUMENTS_CORPUS : deps.corpusVersion(req.corpus),
    deps.pool.modelName?.(),
  ]);
  if (!corpusVersion || !model) return undefined;
  return faqCacheKey(req, { corpusVersion, model });
}

/** Replays a cached sequence; its `retrieval.query` is the current asker's, not the first one's. */
async function* replay(events: GenerateEvent[], query: string): AsyncGenerator<GenerateEvent> {
  for (const ev of events) yield ev.event === "retrieval" ? { event: "retrieval", data: { ...ev.data, query } } : ev;
}

/** How a request may use the FAQ cache: `Cache-Control: no-cache` skips the lookup, `no-store` the store too. */
export interface CachePolicy {
  lookup: boolean;
  store: boolean;
}

/** The {@link CachePolicy} of a request's `Cache-Control` header (absent = both). */
export function cachePolicy(cacheControl: string | undefined): CachePolicy {
  const directives = (cacheControl ?? "")
    .toLowerCase()
    .split(",")
    .map((d) => d.trim());
  const noStore = directives.includes("no-store");
  return { lookup: !noStore && !directives.includes("no-cache"), store: !noStore };
}

/**
 * Starts a generation: a cache hit replays the stored sequence without touching the pool; a miss
 * retrieves, waits for the pool to accept the job, and streams. When the stream ends with `done`
 * the sequence is cached and `key` is charged prompt + completion tokens.
 * @throws NestError `not_found` (unknown corpus), the pool's refusal (`at_capacity` 503 with
 *   `retryAfterS`, `upstream_unavailable`), before any event.
 */
export async function startGeneration(
  deps: GenerateDeps,
  req: GenerateRequest,
  signal: AbortSignal,
  key?: AuthedKey,
  policy: CachePolicy = { lookup: true, store: true },
): Promise<Generation> {
  const t0 = performance.now();
  const cacheKey = policy.lookup || policy.store ? await cacheKeyFor(deps, req) : undefined;
  if (cacheKey && policy.lookup) {
    const hit = await deps.faqCache!.get(cacheKey);
    if (hit) {
      // The corpus must still exist (a hit for an unknown corpus would be stale).
      if (!req.documents && !(await deps.indexFor(req.corpus))) throw new NestError("not_found", `unknown corpus \`${req.corpus}\``);
      return { cache: "hit", events: replay(hit, retrievalQuery(req)) };
    }
  }
  const index = await requestIndex(req, (corpus) => deps.indexFor(corpus));
  const retrieval = await retrieve(index, req, t0);
  const upstream = await deps.pool.decode(decodeJob(req, retrieval.passages), signal);

  async function* run(): AsyncGenerator<GenerateEvent> {
    const seen: GenerateEvent[] = [{ event: "retrieval", data: retrieval.event }];
    yield seen[0]!;
    for await (const out of generationEvents(upstream, retrieval, t0, signal)) {
      seen.push(out);
      yield out;
      if (out.event === "done") {
        // Documents are charged by estimate (⌈characters / 4⌉, protocol/documents.ts) on top of the prompt.
        const tokens = out.data.usage.prompt_tokens + out.data.usage.completion_tokens + estimateDocumentTokens(req.documents);
        if (key) await logRejection(key.chargeTokens(tokens), "generation: token charge", deps.log);
        if (cacheKey && policy.store) await deps.faqCache!.put(cacheKey, seen);
      }
    }
  }
  return { cache: "miss", events: run() };
}

/** A generation tied to its client connection. */
export interface ClientGeneration extends Generation {
  /** Aborts the generation (the pool request; the worker frees its slot). */
  cancel(): void;
  aborted(): boolean;
}

/**
 * {@link startGeneration} for the request of `c`, with the caller's API key: a client disconnect
 * aborts it.
 * @throws as {@link startGeneration}.
 */
export async function startClientGeneration(c: Context, deps: GenerateDeps, req: GenerateRequest): Promise<ClientGeneration> {
  const abort = new AbortController();
  const cancel = () => abort.abort(stopReason("client disconnected"));
  c.req.raw.signal?.addEventListener("abort", cancel, { once: true });
  try {
    const gen = await startGeneration(deps, req, abort.signal, authedKey(c), cachePolicy(c.req.header("cache-control")));
    return { ...gen, cancel, aborted: () => abort.signal.aborted };
  } catch (err) {
    c.req.raw.signal?.removeEventListener("abort", cancel);
    throw err;
  }
}
