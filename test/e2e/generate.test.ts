/**
 * End to end over real HTTP: the real gpu-worker (model + corpus prepared by `nestlm setup`, done
 * here if needed) and the edge on Node, asked "What is the capital of Australia?" in nest mode.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startEdge, type RunningEdge } from "@nest/edge/adapters/node/server";
import { openLanceIndex } from "@nest/corpus/lancedb-index";
import { sha256Hex } from "@nest/edge/middleware/auth";
import { readGenerateEvents } from "@nest/edge/route/read-sse";
import { Writable } from "node:stream";
import { startWorker } from "@nest/gpu-worker/server";
import { ask } from "@nest/cli/ask";
import { prepareModel } from "@nest/gpu-worker/runtime/prepare-model";
import { prepareCorpus } from "@nest/corpus/prepare-corpus";
import type { DeltaEvent, DoneEvent, GenerateEvent, RetrievalEvent } from "@nest/shared/protocol/events";
import { contentWords } from "@nest/gpu-worker/nest/attribution";
import { joinContinuedCitations } from "@nest/shared/protocol/citations";

/** One citation per cited run (a run streamed in pieces joined), with the tokens it covers. */
function citedRuns(events: readonly GenerateEvent[]) {
  return joinContinuedCitations(
    events.flatMap((e) => (e.event === "delta" && e.data.citation ? [{ ...e.data.citation, tokens: e.data.tokens }] : [])),
  );
}

const QUESTION = "What is the capital of Australia?";
const KEY = "e2e-key";

let worker: { url: string; close(): Promise<void> };
let edge: RunningEdge;
let corpusDir: string;
const events: GenerateEvent[] = [];

beforeAll(async () => {
  const log = () => {};
  const modelDir = await prepareModel({ log });
  corpusDir = (await prepareCorpus({ log })).dir;
  worker = await startWorker({ port: 0, modelDir, corpusDirs: { factbook: corpusDir } });
  edge = await startEdge({ port: 0, poolUrl: worker.url, corpusDirs: { factbook: corpusDir }, apiKeyHashes: [await sha256Hex(KEY)] });
  const res = await fetch(`${edge.url}/v1/generate`, {
    method: "POST",
    headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ prompt: QUESTION, mode: "nest", max_new_tokens: 48 }),
  });
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toBe("text/event-stream");
  for await (const ev of readGenerateEvents(res.body!)) events.push(ev);
});

afterAll(async () => {
  await edge?.close();
  await worker?.close();
});

describe("POST /v1/generate over the real stack (nest mode)", () => {
  it("streams retrieval, then deltas, then done", () => {
    const names = events.map((e) => e.event);
    expect(names[0]).toBe("retrieval");
    expect(names.at(-1)).toBe("done");
    expect(names.slice(1, -1).every((n) => n === "delta")).toBe(true);
    expect(names.length).toBeGreaterThan(2);
  });

  it("answers Canberra", () => {
    const text = events
      .filter((e) => e.event === "delta")
      .map((e) => (e.data as DeltaEvent).text)
      .join("");
    expect(text).toContain("Canberra");
  });

  it("retrieves 40 factbook passages with ranks 1..40", () => {
    const r = events[0]!.data as RetrievalEvent;
    expect(r.corpus).toBe("factbook");
    expect(r.query).toBe(QUESTION);
    expect(r.passages.map((p) => p.rank)).toEqual(Array.from({ length: r.passages.length }, (_, i) => i + 1));
    expect(r.passages.length).toBe(40);
  });

  it("cites exact passage ranges that equal the copied text", async () => {
    const retrieved = new Set((events[0]!.data as RetrievalEvent).passages.map((p) => p.id));
    const index = await openLanceIndex(corpusDir, "factbook");
    const texts = new Map((await index.search(QUESTION, 40)).map((p) => [p.id, p.text]));
    await index.close?.();
    let text = "";
    let cited = 0;
    let previous: DeltaEvent["citation"]; // the previous delta's citation (undefined after an uncited delta)
    for (const ev of events) {
      if (ev.event !== "delta") continue;
      const d = ev.data;
      const c = d.citation;
      if (c?.continues) {
        // A piece of a streamed run extends the previous delta's citation.
        expect(previous).toBeDefined();
        expect([c.passage_id, c.passage_start, c.text_start]).toEqual([previous!.passage_id, previous!.passage_end, previous!.text_end]);
      }
      previous = c;
      if (c) {
        cited++;
        expect(retrieved.has(c.passage_id)).toBe(true);
        const passage = texts.get(c.passage_id);
        expect(passage).toBeDefined();
        expect(passage!.slice(c.passage_start, c.passage_end)).toBe(d.text);
        expect(c.cited_text).toBe(d.text);
        expect(c.text_start).toBe(text.length);
        expect(c.text_end).toBe(text.length + d.text.length);
      }
      text += d.text;
      if (c) expect(text.slice(c.text_start, c.text_end)).toBe(d.text);
    }
    expect(cited).toBeGreaterThan(0);
  });

  it('cites "Canberra" to Australia › Government › Capital, and no citation is only a stop word or punctuation', () => {
    // Per cited run: a run streamed in pieces (`continues`) is one citation, its pieces joined.
    const cited = citedRuns(events);
    const canberra = cited.filter((c) => c.cited_text!.includes("Canberra"));
    expect(canberra.length).toBeGreaterThan(0);
    for (const c of canberra) expect(c.title).toBe("Australia › Government › Capital");
    for (const c of cited) expect(contentWords(c.cited_text!), JSON.stringify(c.cited_text)).not.toEqual([]);
    for (const c of cited) expect(c.cited_text!.trim()).not.toMatch(/^(\p{P}|the|of|a|an|and|is|it|in|to)?$/iu);
  });

  it("reports usage that adds up, and the edge's timings", () => {
    const deltas = events.filter((e) => e.event === "delta").map((e) => e.data as DeltaEvent);
    const done = events.at(-1)!.data as DoneEvent;
    const completion = deltas.reduce((s, d) => s + d.tokens, 0);
    const cited = deltas.filter((d) => d.citation);
    const citedTokens = cited.reduce((s, d) => s + d.tokens, 0);
    const u = done.usage;
    expect(done.mode).toBe("nest");
    expect(u.completion_tokens).toBe(completion);
    const runs = citedRuns(events);
    expect([u.cited_tokens, u.citations, u.single_token_citations]).toEqual([
      citedTokens,
      runs.length,
      runs.filter((c) => c.tokens === 1).length,
    ]);
    expect(u.cited_ratio).toBeCloseTo(citedTokens / completion, 10);
    // Provenance (the paper's ratio) covers at least the cited tokens; copies are accepted draft tokens.
    expect(u.attributed_tokens).toBeGreaterThanOrEqual(u.cited_tokens);
    expect(u.attribution_ratio).toBeCloseTo(u.attributed_tokens / completion, 10);
    expect(u.copied_tokens).toBeLessThanOrEqual(u.accepted_tokens);
    expect(u.copied_ratio).toBeCloseTo(u.copied_tokens / completion, 10);
    expect(done.timings_ms.retrieval).toBe((events[0]!.data as RetrievalEvent).retrieval_ms);
    expect(done.timings_ms.total).toBeGreaterThanOrEqual(done.timings_ms.retrieval);
  });
});

describe("bad input on the real stack", () => {
  it("a prompt over the token budget ends with an invalid_request error event", async () => {
    const res = await fetch(`${edge.url}/v1/generate`, {
      method: "POST",
      headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ prompt: "东".repeat(3000), mode: "base", max_new_tokens: 2 }),
    });
    expect(res.status).toBe(200);
    const got: GenerateEvent[] = [];
    for await (const ev of readGenerateEvents(res.body!)) got.push(ev);
    const last = got.at(-1)!;
    expect(last.event).toBe("error");
    expect(last.event === "error" && last.data.error.code).toBe("invalid_request");
    expect(last.event === "error" && last.data.error.message).toMatch(/at most 2048 are accepted/);
  });

  it("the worker's /v1/retrieve answers 404 for corpus names that are object properties", async () => {
    for (const corpus of ["constructor", "__proto__", "toString"]) {
      const res = await fetch(`${worker.url}/v1/retrieve`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ query: "x", corpus, passages: 1 }),
      });
      expect(res.status).toBe(404);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("not_found");
    }
  });
});

describe("nestlm ask against the same stack", () => {
  it("prints the answer with [n] markers, one source line per citation, and the summary", async () => {
    let printed = "";
    const out = new Writable({
      write(chunk, _enc, cb) {
        printed += String(chunk);
        cb();
      },
    });
    const result = await ask({ url: edge.url, key: KEY, question: QUESTION, mode: "nest", maxNewTokens: 16, out });
    expect(result.error).toBeUndefined();
    const done = result.done!;
    if (done.finish_reason === "length") expect(done.usage.completion_tokens).toBe(16);
    else expect(done.usage.completion_tokens).toBeLessThanOrEqual(16);
    const lines = printed.split("\n");
    expect(lines[0]).toMatch(/^40 passages from `factbook` in [\d.]+ ms; top: /);
    result.citations.forEach((c, i) => {
      const line = `[${i + 1}] ${c.title} (${c.source}) chars ${c.passage_start}–${c.passage_end}: ${JSON.stringify(result.text.slice(c.text_start, c.text_end))}`;
      expect(lines).toContain(line);
    });
    const answer = lines.slice(2).join("\n").split("\n\n")[0]!; // the streamed text, markers inline
    expect(answer.replace(/\[\d+\]/g, "")).toBe(result.text);
    expect(answer.match(/\[\d+\]/g) ?? []).toEqual(result.citations.map((_, i) => `[${i + 1}]`));
    expect(printed).toMatch(
      /\n\d+ tokens \(prompt \d+\) · \d+ cited in \d+ citations? \([\d.]+%; \d+ of one token\) · \d+ copied through verified spans \([\d.]+%\) · attribution [\d.]+% \(\d+ with provenance\) · /,
    );
    expect(printed).toMatch(/\ntimings ms: retrieval [\d.]+ · encoding [\d.]+ · knn [\d.]+ · lm [\d.]+ · total [\d.]+\n$/);
  });
});
