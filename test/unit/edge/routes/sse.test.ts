import { describe, expect, it } from "vitest";
import { Hono } from "hono";
import { EventSourceParserStream } from "eventsource-parser/stream";
import { streamMessages, type SseMessage } from "@nest/edge/routes/sse";

const HOSTILE = 'a\n\ndata: {"evil":1}\r\nevent: done\rid: 99\n\n: comment\r\n\r\nz';

async function parse(body: ReadableStream<Uint8Array>) {
  const out: { event?: string; id?: string; data: string }[] = [];
  const reader = body
    .pipeThrough(new TextDecoderStream() as unknown as TransformStream<Uint8Array, string>)
    .pipeThrough(new EventSourceParserStream())
    .getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return out;
    out.push({ event: value.event, id: value.id, data: value.data });
  }
}

/** The raw body `streamMessages` sends for `messages`. */
async function framed(messages: SseMessage[]): Promise<string> {
  const app = new Hono();
  app.get("/", (c) =>
    streamMessages(
      c,
      (async function* () {
        yield* messages;
      })(),
      { log: () => {} },
    ),
  );
  return (await app.request("/")).text();
}

describe("SSE framing (hono's writeSSE)", () => {
  it("splits CR, LF and CRLF into data lines and numbers the message", async () => {
    expect(
      await framed([
        { event: "skip", data: "" },
        { event: "delta", data: "x\r\ny\rz\nw" },
      ]),
    ).toBe("event: skip\ndata: \nid: 0\n\nevent: delta\ndata: x\ndata: y\ndata: z\ndata: w\nid: 1\n\n");
  });
  it("refuses an event name with a line break: an `error` event goes out instead, nothing is injected", async () => {
    const text = await framed([{ event: "a\nb", data: "" }]);
    expect(text).toBe(
      `event: error\ndata: ${JSON.stringify({ error: { code: "internal", message: 'event must not contain "\\r" or "\\n"' } })}\nid: 0\n\n`,
    );
  });
});

describe("streamMessages", () => {
  it("hostile raw text and JSON-encoded text both round-trip exactly, with ids 0,1,2", async () => {
    const app = new Hono();
    app.get("/", (c) =>
      streamMessages(
        c,
        (async function* (): AsyncGenerator<SseMessage> {
          yield { event: "delta", data: JSON.stringify({ text: HOSTILE }) };
          yield { event: "raw", data: HOSTILE.replace(/\r\n|\r/g, "\n") };
          yield { data: "[DONE]" };
        })(),
      ),
    );
    const msgs = await parse((await app.request("/")).body!);
    expect(msgs.map((m) => m.id)).toEqual(["0", "1", "2"]);
    expect(JSON.parse(msgs[0]!.data)).toEqual({ text: HOSTILE });
    expect(msgs[0]!.event).toBe("delta");
    expect(msgs[1]!.data).toBe(HOSTILE.replace(/\r\n|\r/g, "\n"));
    expect(msgs[2]).toEqual({ event: undefined, id: "2", data: "[DONE]" });
  });

  it("sends keep-alive comments while the source is silent", async () => {
    const app = new Hono();
    app.get("/", (c) =>
      streamMessages(
        c,
        (async function* () {
          await new Promise((r) => setTimeout(r, 130));
          yield { event: "delta", data: "{}" };
        })(),
        { heartbeatMs: 50 },
      ),
    );
    const text = await (await app.request("/")).text();
    expect(text.match(/^: keep-alive$/gm)?.length).toBe(2);
    expect(text.endsWith("event: delta\ndata: {}\nid: 0\n\n")).toBe(true);
  });

  it("an error thrown mid-stream becomes an `error` event", async () => {
    const app = new Hono();
    app.get("/", (c) =>
      streamMessages(
        c,
        (async function* () {
          yield { event: "delta", data: "{}" };
          throw new Error("boom");
        })(),
      ),
    );
    const msgs = await parse((await app.request("/")).body!);
    expect(msgs[1]).toEqual({ event: "error", id: "1", data: JSON.stringify({ error: { code: "internal", message: "boom" } }) });
  });
});
