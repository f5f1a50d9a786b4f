/**
 * @module routes/playground/sse-js
 * The playground's browser-side Server-Sent Events reader, as the source text of an ES module served
 * at `playground/sse.js`. `EventSource` cannot POST or send an `Authorization` header, so the page
 * reads `POST /v1/generate` with `fetch` and this parser (the WHATWG "event stream interpretation":
 * lines end with CRLF, LF or CR, a CR at the end of one chunk and an LF at the start of the next are
 * one line end; `data:` lines are joined with "\n"; comments and unknown fields are ignored; an event
 * is dispatched on a blank line, and only if it has data; an unterminated event at the end of the
 * stream is dropped). Worker-safe: a plain string.
 *
 * Exports of the served module:
 * - `createSseParser(onEvent)` → `{ push(text), end() }`; `onEvent({event, data, id})` per message,
 *   `event` defaulting to `"message"`.
 * - `readSse(body, onEvent)`: decodes a `ReadableStream<Uint8Array>` as UTF-8 and feeds the parser;
 *   resolves when the stream ends, rejects with the reader's error.
 */
export const SSE_JS = String.raw`// nest playground: SSE parser (fetch + ReadableStream; EventSource cannot POST).
export function createSseParser(onEvent) {
  let pending = "";        // the current line so far
  let skipLF = false;      // the previous chunk ended with CR: a leading LF belongs to it
  let started = false;     // a leading BOM is dropped once
  let eventName = "";
  let lastId = "";
  let data = [];
  let hasData = false;

  function line(l) {
    if (l === "") {
      if (hasData) onEvent({ event: eventName || "message", data: data.join("\n"), id: lastId });
      data = [];
      hasData = false;
      eventName = "";
      return;
    }
    if (l.charCodeAt(0) === 58) return; // ":" comment
    const colon = l.indexOf(":");
    let field = l;
    let value = "";
    if (colon >= 0) {
      field = l.slice(0, colon);
      value = l.slice(colon + 1);
      if (value.charCodeAt(0) === 32) value = value.slice(1);
    }
    if (field === "data") {
      data.push(value);
      hasData = true;
    } else if (field === "event") {
      eventName = value;
    } else if (field === "id") {
      if (value.indexOf("\u0000") < 0) lastId = value;
    }
  }

  return {
    push(chunk) {
      let i = 0;
      if (!started && chunk.length > 0) {
        started = true;
        if (chunk.charCodeAt(0) === 0xfeff) i = 1;
      }
      if (skipLF && i < chunk.length) {
        skipLF = false;
        if (chunk.charCodeAt(i) === 10) i++;
      }
      let start = i;
      for (; i < chunk.length; i++) {
        const c = chunk.charCodeAt(i);
        if (c !== 10 && c !== 13) continue;
        line(pending + chunk.slice(start, i));
        pending = "";
        if (c === 13) {
          if (i + 1 < chunk.length) {
            if (chunk.charCodeAt(i + 1) === 10) i++;
          } else {
            skipLF = true;
          }
        }
        start = i + 1;
      }
      pending += chunk.slice(start);
    },
    end() {
      pending = "";
      data = [];
      hasData = false;
      eventName = "";
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
