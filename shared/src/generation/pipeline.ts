/**
 * @module generation/pipeline
 * The one generation pipeline, shared by the edge's `/v1/generate` (and OpenAI routes), the batch
 * consumer and the evaluation harness:
 *
 * 1. {@link retrieve}: first-stage retrieval of the request's passages (nest-algorithm.md §1; none
 *    in mode `base`), timed, with the `retrieval` event it produces;
 * 2. {@link decodeJob}: the job a gpu-worker decodes (the request plus the passages' text);
 * 3. {@link generationEvents}: the job's events as the client sees them, `done` carrying the
 *    retrieval and total timings of the whole pipeline ({@link withTimings});
 * 4. {@link collectGeneration}: for callers that want the answer, not the stream.
 *
 * A request with `documents` retrieves from its own documents ({@link requestIndex},
 * `retrieve/documents.ts`) and its citations gain their place in the documents.
 *
 * Where the job runs (the pool over HTTP, an inference thread, the engine in-process) is the
 * caller's. Worker-safe: no Node modules.
 */
import { ERROR_STATUS, NestError, type ErrorCode } from "../protocol/errors.ts";
import type { DeltaEvent, DoneEvent, GenerateEvent, RetrievalEvent } from "../protocol/events.ts";
import type { Passage, ScoredPassage } from "../protocol/passage.ts";
import { retrievalQuery, usesRetrieval, type GenerateRequest } from "../protocol/request.ts";
import type { DecodeJob } from "../protocol/worker.ts";
import type { PassageIndex } from "../retrieve/passage-index.ts";
import { citeIntoDocument, DocumentIndex } from "../retrieve/documents.ts";

/** Milliseconds since `t0` (a `performance.now()` reading), rounded to 0.1 ms. */
export function sinceMs(t0: number): number {
  return Math.round((performance.now() - t0) * 10) / 10;
}

/** The outcome of {@link retrieve}. */
export interface Retrieval {
  /** Passages best first (empty in mode `base`). */
  passages: ScoredPassage[];
  /** Time from `t0` to the end of retrieval, ms (0.1 ms resolution). */
  retrievalMs: number;
  /** The `retrieval` event of the stream (passages with their text, for clients that show it). */
  event: RetrievalEvent;
}

/**
 * The index `req` retrieves from: a {@link DocumentIndex} over its `documents` when it has them,
 * else `lookup(req.corpus)`.
 * @throws NestError `not_found` when `lookup` knows no such corpus
 */
export async function requestIndex(
  req: GenerateRequest,
  lookup: (corpus: string) => Promise<PassageIndex | undefined>,
): Promise<PassageIndex> {
  if (req.documents) return new DocumentIndex(req.documents);
  const index = await lookup(req.corpus);
  if (!index) throw new NestError("not_found", `unknown corpus \`${req.corpus}\``);
  return index;
}

/**
 * First-stage retrieval for `req` on `index`: the request's `passages` best passages for its
 * retrieval query (the prompt, or the last user message), fused as `req.fusion` asks; none in mode
 * `base`.
 *
 * @param t0 `performance.now()` when the request started; `retrievalMs` counts from it
 * @throws the index's errors (NestError `upstream_unavailable`, `invalid_request`)
 */
export async function retrieve(index: PassageIndex, req: GenerateRequest, t0 = performance.now()): Promise<Retrieval> {
  const passages = usesRetrieval(req.mode) ? await index.search(retrievalQuery(req), req.passages, { fusion: req.fusion }) : [];
  const retrievalMs = sinceMs(t0);
  return {
    passages,
    retrievalMs,
    event: {
      query: retrievalQuery(req),
      corpus: req.corpus,
      passages: passages.map(({ id, title, source, score, rank, text, document }) => ({
        id,
        title,
        source,
        score,
        rank,
        text,
        ...(document && { document }),
      })),
      retrieval_ms: retrievalMs,
    },
  };
}

/** The decode job of `req` over `passages` (their id, title, text and source only). */
export function decodeJob(req: GenerateRequest, passages: readonly Passage[]): DecodeJob {
  return { request: req, passages: passages.map(({ id, title, text, source }): Passage => ({ id, title, text, source })) };
}

/** `done` with the pipeline's `retrieval` and `total` timings (ms) in place of the decoder's. */
export function withTimings(done: DoneEvent, retrievalMs: number, totalMs: number): DoneEvent {
  return { ...done, timings_ms: { ...done.timings_ms, retrieval: retrievalMs, total: totalMs } };
}

/**
 * The events of a decode job as the pipeline emits them: `delta`*, then `done` (its timings patched
 * by {@link withTimings}, total = {@link sinceMs}(t0)) or `error`; a `retrieval` event from the
 * decoder is dropped (the caller emits its own, from {@link retrieve}); a citation of a document
 * chunk among `retrieval.passages` gains its place in the document ({@link citeIntoDocument}).
 * Ends after `done` or `error`.
 *
 * @param upstream the decoder's events (`delta`*, then `done` or `error`)
 * @param t0 `performance.now()` when the request started
 * @throws NestError `upstream_unavailable` when `upstream` ends before `done` or `error`, unless `signal` was aborted
 */
export async function* generationEvents(
  upstream: AsyncIterable<GenerateEvent>,
  retrieval: Pick<Retrieval, "retrievalMs"> & Partial<Pick<Retrieval, "passages">>,
  t0: number,
  signal?: AbortSignal,
): AsyncGenerator<GenerateEvent> {
  for await (const ev of upstream) {
    if (ev.event === "retrieval") continue;
    if (ev.event === "done") {
      yield { event: "done", data: withTimings(ev.data, retrieval.retrievalMs, sinceMs(t0)) };
      return;
    }
    if (ev.event === "delta" && ev.data.citation && retrieval.passages) {
      yield { event: "delta", data: { ...ev.data, citation: citeIntoDocument(ev.data.citation, retrieval.passages) } };
      continue;
    }
    yield ev;
    if (ev.event === "error") return;
  }
  if (!signal?.aborted) throw new NestError("upstream_unavailable", "the decode stream ended before `done`");
}

/** A finished generation: its text (the deltas joined), the deltas and the `done` event. */
export interface CollectedGeneration {
  text: string;
  deltas: DeltaEvent[];
  done: DoneEvent;
}

/**
 * Collects a generation's events into its answer.
 * @throws NestError with the code of an `error` event (`internal` for a code this version does not
 *   know); `upstream_unavailable` when the events end without `done`
 */
export async function collectGeneration(events: AsyncIterable<GenerateEvent>): Promise<CollectedGeneration> {
  const deltas: DeltaEvent[] = [];
  for await (const ev of events) {
    if (ev.event === "delta") deltas.push(ev.data);
    else if (ev.event === "error") {
      const code = ev.data.error.code;
      throw new NestError(Object.hasOwn(ERROR_STATUS, code) ? (code as ErrorCode) : "internal", ev.data.error.message);
    } else if (ev.event === "done") return { text: deltas.map((d) => d.text).join(""), deltas, done: ev.data };
  }
  throw new NestError("upstream_unavailable", "the decode stream ended before `done`");
}
