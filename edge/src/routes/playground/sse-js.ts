/**
 * @module routes/playground/sse-js
 * The playground's browser-side Server-Sent Events reader, as the source text of an ES module served
 * at `playground/sse.js`. `EventSource` cannot POST or send an `Authorization` header, so the page
 * reads `POST /v1/generate` with `fetch` and parses the stream with `eventsource-parser` (the
 * parser the edge uses, issue 11 item 6), inlined into the module text from
 * {@link EVENTSOURCE_PARSER_JS} (3.7 kB, no imports; the page loads nothing from elsewhere). The
 * WHATWG "event stream interpretation" holds: lines end with CRLF, LF or CR (also when a CR and
 * its LF arrive in different chunks); `data:` lines are joined with "\n"; comments and unknown
 * fields are ignored; an event is dispatched on a blank line, and only if it has data; an
 * unterminated event at the end of the stream is dropped. The thin wrapper adds what
 * eventsource-parser leaves to its caller: the last event id carried over to later events, a
 * leading U+FEFF dropped from decoded text, and a CR that ends the stream taken as a line end.
 * Worker-safe: a plain string.
 *
 * Exports of the served module:
 * - `createSseParser(onEvent)` → `{ push(text), end() }`; `onEvent({event, data, id})` per message,
 *   `event` defaulting to `"message"`, `id` the last id seen (`""` before any).
 * - `readSse(body, onEvent)`: decodes a `ReadableStream<Uint8Array>` as UTF-8 and feeds the parser;
 *   resolves when the stream ends, rejects with the reader's error.
 */
import { EVENTSOURCE_PARSER_JS, EVENTSOURCE_PARSER_LICENSE, EVENTSOURCE_PARSER_VERSION } from "./eventsource-parser-js.ts";

const WRAPPER_JS = String.raw`
export function createSseParser(onEvent) {
  let lastId = "";
  let started = false;     // a leading BOM is dropped once
  let endsWithCR = false;  // the text so far ends with CR: at the end of the stream, that is a line end
  const parser = createParser({
    onEvent(msg) {
      if (msg.id !== undefined) lastId = msg.id;
      onEvent({ event: msg.event || "message", data: msg.data, id: lastId });
    },
  });
  return {
    push(chunk) {
      if (!started && chunk.length > 0) {
        started = true;
        if (chunk.charCodeAt(0) === 0xfeff) chunk = chunk.slice(1);
      }
      if (chunk.length === 0) return;
      endsWithCR = chunk.charCodeAt(chunk.length - 1) === 13;
      parser.feed(chunk);
    },
    end() {
      if (endsWithCR) parser.feed("\n");
      endsWithCR = false;
      parser.reset();
    },
  };
}

export async function readSse(body, onEvent) {
  const parser = createSseParser(onEvent);
  const decoder = new TextDecoder("utf-8");
  const reader = body.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.push(decoder.decode(value, { stream: true }));
    }
    parser.push(decoder.decode());
    parser.end();
  } finally {
    reader.releaseLock();
  }
}
`;

export const SSE_JS =
  "// nest playground: SSE parser (fetch + ReadableStream; EventSource cannot POST).\n" +
  `/* eventsource-parser ${EVENTSOURCE_PARSER_VERSION}, inlined:\n${EVENTSOURCE_PARSER_LICENSE.replace(/\*\//g, "* /")}\n*/\n` +
  EVENTSOURCE_PARSER_JS +
  WRAPPER_JS;
