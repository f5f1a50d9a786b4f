import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DoneEvent, GenerateEvent } from "@nest/shared/protocol/events";
import { GenerateRequestSchema } from "@nest/shared/protocol/request";
import { NestError } from "@nest/shared/protocol/errors";
import { buildLanceIndex, openLanceIndex, type LancePassageIndex } from "@nest/corpus/lancedb-index";
import { collectGeneration, decodeJob, generationEvents, retrieve, withTimings } from "@nest/shared/generation/pipeline";

const P = (id: string, title: string, text: string) => ({ id, title, text, source: `test#${id}` });
const PASSAGES = [
  P("a", "Australia › Government › Capital", "Australia, capital: name: Canberra"),
  P("b", "Austria › Government › Capital", "Austria, capital: name: Vienna"),
  P("c", "Nepal › Geography › Elevation extremes", "Nepal, elevation extremes: highest point: Mount Everest 8,850 m"),
];

/** A `done` event as a decoder sends it: its own retrieval (0) and total (decoding only) timings. */
const DONE = {
  finish_reason: "stop",
  mode: "nest",
  model: "m",
  usage: { prompt_tokens: 3, completion_tokens: 2 },
  timings_ms: { retrieval: 0, encoding: 5, knn: 1, lm: 7, total: 13 },
} as unknown as DoneEvent;

async function* events(...evs: GenerateEvent[]): AsyncGenerator<GenerateEvent> {
  yield* evs;
}

async function all<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

describe("generation pipeline", () => {
  let dir: string;
  let index: LancePassageIndex;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "nest-pipeline-"));
    await buildLanceIndex(dir, PASSAGES);
    index = await openLanceIndex(dir, "test");
  });
  afterAll(async () => {
    index?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("retrieves the request's passages for its query and builds the retrieval event and the decode job", async () => {
    const req = GenerateRequestSchema.parse({ prompt: "What is the capital of Australia?", passages: 2, corpus: "test" });
    const r = await retrieve(index, req);
    expect(r.passages.map((p) => p.id)).toEqual(["a", "b"]);
    expect(r.event).toMatchObject({ query: "What is the capital of Australia?", corpus: "test", retrieval_ms: r.retrievalMs });
    expect(r.event.passages.map((p) => [p.id, p.rank, p.text])).toEqual([
      ["a", 1, "Australia, capital: name: Canberra"],
      ["b", 2, "Austria, capital: name: Vienna"],
    ]);
    const job = decodeJob(req, r.passages);
    expect(job.request).toBe(req);
    expect(job.passages).toEqual([PASSAGES[0], PASSAGES[1]]); // no score or rank in the job
  });

  it("retrieves nothing in mode base", async () => {
    const r = await retrieve(index, GenerateRequestSchema.parse({ prompt: "capital of Australia", mode: "base" }));
    expect(r.passages).toEqual([]);
    expect(r.event.passages).toEqual([]);
  });

  it("patches only the retrieval and total timings of done", () => {
    expect(withTimings(DONE, 2.5, 20.1).timings_ms).toEqual({ retrieval: 2.5, encoding: 5, knn: 1, lm: 7, total: 20.1 });
    expect(DONE.timings_ms.total).toBe(13); // not mutated
  });

  it("drops the decoder's retrieval event, patches done, and stops after it", async () => {
    const delta = { event: "delta", data: { text: " Canberra", tokens: 1 } } as const;
    const out = await all(
      generationEvents(
        events(
          { event: "retrieval", data: { query: "q", corpus: "c", passages: [], retrieval_ms: 0 } },
          delta,
          { event: "done", data: DONE },
          delta,
        ),
        { retrievalMs: 4 },
        performance.now(),
      ),
    );
    expect(out.map((e) => e.event)).toEqual(["delta", "done"]);
    const done = out[1]!.data as DoneEvent;
    expect(done.timings_ms.retrieval).toBe(4);
    expect(done.timings_ms.encoding).toBe(5);
  });

  it("ends after an error event; a stream without done is upstream_unavailable unless aborted", async () => {
    const error = { event: "error", data: { error: { code: "model_not_prepared", message: "no model" } } } as const;
    expect((await all(generationEvents(events(error, { event: "done", data: DONE }), { retrievalMs: 0 }, 0))).map((e) => e.event)).toEqual([
      "error",
    ]);
    const cut = events({ event: "delta", data: { text: "x", tokens: 1 } });
    await expect(all(generationEvents(cut, { retrievalMs: 0 }, 0))).rejects.toMatchObject({ code: "upstream_unavailable" });
    const aborted = AbortSignal.abort();
    expect(await all(generationEvents(events(), { retrievalMs: 0 }, 0, aborted))).toEqual([]);
  });

  it("collects text and deltas; error events become NestErrors with their code", async () => {
    const got = await collectGeneration(
      events(
        { event: "delta", data: { text: "The capital is", tokens: 3 } },
        { event: "delta", data: { text: " Canberra", tokens: 1 } },
        { event: "done", data: DONE },
      ),
    );
    expect(got.text).toBe("The capital is Canberra");
    expect(got.deltas).toHaveLength(2);
    expect(got.done).toBe(DONE);
    const err = (code: string) => events({ event: "error", data: { error: { code, message: "m" } } });
    await expect(collectGeneration(err("at_capacity"))).rejects.toMatchObject({ code: "at_capacity", status: 503 });
    await expect(collectGeneration(err("no_such_code"))).rejects.toMatchObject({ code: "internal" });
    await expect(collectGeneration(events())).rejects.toBeInstanceOf(NestError);
  });
});
