/**
 * The playground's browser SSE parser (`playground/sse.js`), run as the very module text the page
 * loads: line ends (LF, CRLF, CR, and CRLF split across chunks), multi-line data, comments, ids,
 * dispatch rules, and `readSse` over a byte stream with a multi-byte character split across chunks.
 */
import { describe, expect, it } from "vitest";
import { SSE_JS } from "@nest/edge/routes/playground/sse-js";
import { RENDER_JS } from "@nest/edge/routes/playground/render-js";
import { EVENTSOURCE_PARSER_JS, EVENTSOURCE_PARSER_VERSION } from "@nest/edge/routes/playground/eventsource-parser-js";
import { distPath, inlineableParser } from "../../../../../scripts/vendor-eventsource-parser.ts";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

interface Msg {
  event: string;
  data: string;
  id: string;
}
type SseModule = {
  createSseParser(onEvent: (m: Msg) => void): { push(text: string): void; end(): void };
  readSse(body: ReadableStream<Uint8Array>, onEvent: (m: Msg) => void): Promise<void>;
};

const sse = (await import(`data:text/javascript,${encodeURIComponent(SSE_JS)}`)) as SseModule;
const render = (await import(`data:text/javascript,${encodeURIComponent(RENDER_JS)}`)) as {
  contextOf(text: string, start: number, end: number, radius: number): Record<string, unknown>;
};

function parse(chunks: string[]): Msg[] {
  const out: Msg[] = [];
  const p = sse.createSseParser((m) => out.push(m));
  for (const c of chunks) p.push(c);
  p.end();
  return out;
}

describe("createSseParser", () => {
  it("parses named events with LF line ends", () => {
    expect(parse(['event: retrieval\ndata: {"a":1}\n\nevent: done\ndata: {}\n\n'])).toEqual([
      { event: "retrieval", data: '{"a":1}', id: "" },
      { event: "done", data: "{}", id: "" },
    ]);
  });

  it("joins multi-line data with \\n and strips one leading space only", () => {
    expect(parse(["data: line one\ndata:line two\ndata:  three\n\n"])).toEqual([
      { event: "message", data: "line one\nline two\n three", id: "" },
    ]);
  });

  it("accepts CRLF and CR line ends, also when CR and LF arrive in different chunks", () => {
    expect(parse(["event: delta\r\ndata: x\r", "\n\r", "\nevent: e2\rdata: y\r\r"])).toEqual([
      { event: "delta", data: "x", id: "" },
      { event: "e2", data: "y", id: "" },
    ]);
  });

  it("handles a chunk boundary anywhere, one character at a time", () => {
    const text = 'event: delta\r\ndata: {"text":"Can"}\r\n\r\nevent: done\ndata: {}\n\n';
    expect(parse([...text])).toEqual([
      { event: "delta", data: '{"text":"Can"}', id: "" },
      { event: "done", data: "{}", id: "" },
    ]);
  });

  it("ignores comments and unknown fields, keeps the last id, treats a colon-less line as a field", () => {
    expect(parse([": ping\nretry: 10\nid: 7\nfoo: bar\ndata\n\n", "event: x\n\n"])).toEqual([{ event: "message", data: "", id: "7" }]);
  });

  it("drops an event without data and an unterminated event at the end", () => {
    expect(parse(["event: nothing\n\ndata: half"])).toEqual([]);
  });

  it("drops a leading BOM", () => {
    expect(parse(["\ufeffdata: a\n\n"])).toEqual([{ event: "message", data: "a", id: "" }]);
  });
});

describe("the inlined eventsource-parser", () => {
  it("is the installed package's build (else run `node --import tsx scripts/vendor-eventsource-parser.ts`)", () => {
    const installed = createRequire(import.meta.url)("eventsource-parser/package.json") as { version: string };
    expect(EVENTSOURCE_PARSER_VERSION).toBe(installed.version);
    expect(EVENTSOURCE_PARSER_JS).toBe(inlineableParser(readFileSync(distPath(), "utf8")));
    expect(SSE_JS).toContain(EVENTSOURCE_PARSER_JS);
    expect(SSE_JS).toContain("Copyright (c) 2025 Espen Hovlandsdal");
  });
});

describe("readSse", () => {
  it("decodes UTF-8 split inside a character across chunks", async () => {
    const bytes = new TextEncoder().encode('event: delta\ndata: {"text":"Zürich €"}\n\n');
    const cut = bytes.indexOf(0xc3) + 1; // between the two bytes of "ü"
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(bytes.slice(0, cut));
        c.enqueue(bytes.slice(cut));
        c.close();
      },
    });
    const out: Msg[] = [];
    await sse.readSse(body, (m) => out.push(m));
    expect(out).toEqual([{ event: "delta", data: '{"text":"Zürich €"}', id: "" }]);
  });
});

describe("contextOf (playground/render.js)", () => {
  it("cuts `radius` characters either side of the cited range and says where it cut", () => {
    const text = "Capital: Canberra; geographic coordinates 35 17 S";
    expect(render.contextOf(text, 9, 17, 4)).toEqual({
      before: "al: ",
      cited: "Canberra",
      after: "; ge",
      cutBefore: true,
      cutAfter: true,
    });
    expect(render.contextOf(text, 0, 7, 100)).toEqual({
      before: "",
      cited: "Capital",
      after: ": Canberra; geographic coordinates 35 17 S",
      cutBefore: false,
      cutAfter: false,
    });
  });
});
