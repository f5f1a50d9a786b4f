/**
 * `nestlm ask` against a stand-in edge (a local HTTP server answering `/v1/generate` with a fixed
 * SSE stream): a copied run streamed in pieces (`citation.continues`) prints one `[n]` marker and
 * one source line.
 */
import { createServer, type Server } from "node:http";
import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ask } from "@nest/cli/ask";
import type { GenerateEvent } from "@nest/shared/protocol/events";

const CAPITAL = { passage_id: "as-capital", title: "Capital", source: "factbook/as#Capital" };
const KIRIBATI = { passage_id: "kr", title: "Kiribati", source: "factbook/kr#Capital" };
const EVENTS: GenerateEvent[] = [
  {
    event: "retrieval",
    data: {
      query: "q",
      corpus: "factbook",
      passages: [{ id: "as-capital", title: "Capital", source: "factbook/as#Capital", score: 1, rank: 1 }],
      retrieval_ms: 3,
    },
  },
  { event: "delta", data: { text: " It is", tokens: 2 } },
  {
    event: "delta",
    data: {
      text: " Canberra",
      tokens: 1,
      citation: { ...CAPITAL, passage_start: 5, passage_end: 14, text_start: 6, text_end: 15, cited_text: " Canberra" },
    },
  },
  {
    event: "delta",
    data: {
      text: "; time",
      tokens: 2,
      citation: { ...CAPITAL, passage_start: 14, passage_end: 20, text_start: 15, text_end: 21, cited_text: "; time", continues: true },
    },
  },
  {
    event: "delta",
    data: {
      text: " Tarawa",
      tokens: 1,
      citation: { ...KIRIBATI, passage_start: 27, passage_end: 34, text_start: 21, text_end: 28, cited_text: " Tarawa" },
    },
  },
  {
    event: "delta",
    data: {
      text: ",",
      tokens: 1,
      citation: { ...KIRIBATI, passage_start: 34, passage_end: 35, text_start: 28, text_end: 29, cited_text: ",", continues: true },
    },
  },
  { event: "delta", data: { text: " ok.", tokens: 2 } },
  {
    event: "done",
    data: {
      finish_reason: "stop",
      mode: "nest",
      model: "m",
      usage: {
        prompt_tokens: 10,
        completion_tokens: 9,
        lm_forward_passes: 4,
        drafted_tokens: 0,
        accepted_tokens: 0,
        num_drafts: 0,
        attributed_tokens: 5,
        attribution_ratio: 5 / 9,
        cited_tokens: 5,
        cited_ratio: 5 / 9,
        copied_tokens: 0,
        copied_ratio: 0,
        citations: 2,
        single_token_citations: 0,
        store_passages: 1,
        store_keys: 4,
      },
      timings_ms: { retrieval: 3, encoding: 1, knn: 1, lm: 5, total: 12 },
    },
  },
];

let server: Server;
let url: string;
const bodies: unknown[] = [];

beforeAll(async () => {
  server = createServer((req, res) => {
    let raw = "";
    req.on("data", (d) => {
      raw += String(d);
    });
    req.on("end", () => bodies.push(JSON.parse(raw)));
    res.writeHead(200, { "content-type": "text/event-stream", "x-nest-cache": "hit" });
    for (const ev of EVENTS) res.write(`event: ${ev.event}\ndata: ${JSON.stringify(ev.data)}\n\n`);
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});

afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

describe("ask", () => {
  it("sends --corpus as `corpus` and says when the answer came from the FAQ cache", async () => {
    let printed = "";
    const out = new Writable({
      write(chunk, _enc, cb) {
        printed += String(chunk);
        cb();
      },
    });
    const result = await ask({ url, key: "k", question: "q", corpus: "notes", out });
    expect(bodies.at(-1)).toEqual({ prompt: "q", mode: "nest", corpus: "notes" });
    expect(result.cache).toBe("hit");
    expect(printed.trimEnd().split("\n").at(-1)).toBe(
      "answer from the FAQ cache (x-nest-cache: hit): usage and timings are those of the answer cached",
    );
  });

  it("prints one marker and one source per copied run, pieces joined", async () => {
    let printed = "";
    const out = new Writable({
      write(chunk, _enc, cb) {
        printed += String(chunk);
        cb();
      },
    });
    const result = await ask({ url, key: "k", question: "q", out });
    expect(result.text).toBe(" It is Canberra; time Tarawa, ok.");
    expect(result.citations).toEqual([
      { ...CAPITAL, passage_start: 5, passage_end: 20, text_start: 6, text_end: 21, cited_text: " Canberra; time" },
      { ...KIRIBATI, passage_start: 27, passage_end: 35, text_start: 21, text_end: 29, cited_text: " Tarawa," },
    ]);
    const lines = printed.split("\n");
    expect(lines.slice(0, 7)).toEqual([
      "1 passages from `factbook` in 3 ms; top: Capital",
      "",
      " It is Canberra; time[1] Tarawa,[2] ok.",
      "",
      '[1] Capital (factbook/as#Capital) chars 5–20: " Canberra; time"',
      '[2] Kiribati (factbook/kr#Capital) chars 27–35: " Tarawa,"',
      "",
    ]);
  });

  it("ends the marker of a run that the stream ends with", async () => {
    const events = EVENTS;
    const saved = events.splice(6, 1); // drop " ok.": the answer ends on the continued run
    try {
      let printed = "";
      const out = new Writable({
        write(chunk, _enc, cb) {
          printed += String(chunk);
          cb();
        },
      });
      await ask({ url, key: "k", question: "q", out });
      expect(printed.split("\n")[2]).toBe(" It is Canberra; time[1] Tarawa,[2]");
    } finally {
      events.splice(6, 0, ...saved);
    }
  });
});
