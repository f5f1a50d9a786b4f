/**
 * @module routes/generate
 * `POST /v1/generate`: first-stage retrieval on the edge (nest-algorithm.md §1), then the decode job
 * on the gpu-worker pool, streamed back as SSE: `retrieval`, `delta`*, `done` | `error`
 * (shared/src/protocol/events.ts). Worker-safe.
 */
import type { Context } from "hono";
import { streamSSE } from "hono/streaming";
import { usesRetrieval, retrievalQuery, type GenerateRequest } from "@nest/shared/protocol/request";
import type { GenerateEvent, RetrievalEvent } from "@nest/shared/protocol/events";
import type { Passage, ScoredPassage } from "@nest/shared/protocol/passage";
import type { DecodeJob } from "@nest/shared/protocol/worker";
import { NestError, toNestError } from "@nest/shared/protocol/errors";
import type { PassageIndex } from "../retrieve/passage-index.ts";
import type { DecodeClient } from "../route/pool-client.ts";
import { parseGenerateRequest } from "../middleware/validate.ts";

/** What the generate route needs. */
export interface GenerateDeps {
  /** The passage index of a corpus, or `undefined` when the corpus is unknown (→ 404). */
  indexFor(corpus: string): Promise<PassageIndex | undefined>;
  /** The gpu-worker pool. */
  pool: DecodeClient;
  log?: (line: string) => void;
}

/** Milliseconds since `t0` (a `performance.now()` reading), rounded to 0.1 ms. */
function sinceMs(t0: number): number {
  return Math.round((performance.now() - t0) * 10) / 10;
}

/**
 * Runs first-stage retrieval for `req` (none for mode `base`).
 * @throws NestError `not_found` for an unknown corpus; whatever the index throws.
 */
async function retrieve(deps: GenerateDeps, req: GenerateRequest): Promise<ScoredPassage[]> {
  const index = await deps.indexFor(req.corpus);
  if (!index) throw new NestError("not_found", `unknown corpus \`${req.corpus}\``);
  if (!usesRetrieval(req.mode)) return [];
  return index.search(retrievalQuery(req), req.passages);
}

/**
 * The route handler. Errors before the stream starts (bad body, unknown corpus, retrieval failure)
 * are thrown and become JSON errors in `onError`; errors after it started become an SSE `error`
 * event, after which the stream closes. A client disconnect aborts the pool request.
 */
export function generateHandler(deps: GenerateDeps) {
  return async (c: Context) => {
    const t0 = performance.now();
    const req = await parseGenerateRequest(c.req.raw);
    const passages = await retrieve(deps, req);
    const retrievalMs = sinceMs(t0);
    const retrieval: RetrievalEvent = {
      query: retrievalQuery(req),
      corpus: req.corpus,
      passages: passages.map(({ id, title, source, score, rank, text }) => ({ id, title, source, score, rank, text })),
      retrieval_ms: retrievalMs,
    };
    const job: DecodeJob = {
      request: req,
      passages: passages.map(({ id, title, text, source }): Passage => ({ id, title, text, source })),
    };

    const abort = new AbortController();
    const cancel = () => abort.abort(new Error("client disconnected"));
    c.req.raw.signal?.addEventListener("abort", cancel, { once: true });
    // Wait for the pool to accept the job: a refusal (503 at capacity, with Retry-After) becomes the
    // HTTP answer instead of an error event after a 200.
    let events: AsyncIterable<GenerateEvent>;
    try {
      events = await deps.pool.decode(job, abort.signal);
    } catch (err) {
      c.req.raw.signal?.removeEventListener("abort", cancel);
      throw err;
    }

    return streamSSE(c, async (stream) => {
      stream.onAbort(cancel);
      try {
        await stream.writeSSE({ event: "retrieval", data: JSON.stringify(retrieval) });
        let ended = false;
        for await (const ev of events) {
          if (ev.event === "retrieval") continue; // the edge sent its own
          let data: unknown = ev.data;
          if (ev.event === "done") {
            data = { ...ev.data, timings_ms: { ...ev.data.timings_ms, retrieval: retrievalMs, total: sinceMs(t0) } };
          }
          await stream.writeSSE({ event: ev.event, data: JSON.stringify(data) });
          if (ev.event === "done" || ev.event === "error") {
            ended = true;
            break;
          }
        }
        if (!ended && !abort.signal.aborted) {
          throw new NestError("upstream_unavailable", "gpu-worker stream ended before `done`");
        }
      } catch (err) {
        if (abort.signal.aborted) return;
        const e = toNestError(err);
        deps.log?.(`generate: stream error ${e.code}: ${e.message}`);
        await stream.writeSSE({ event: "error", data: JSON.stringify(e.toBody()) });
      } finally {
        c.req.raw.signal?.removeEventListener("abort", cancel);
      }
    });
  };
}
