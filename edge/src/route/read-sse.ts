/**
 * @module route/read-sse
 * Reads a `text/event-stream` body of `POST /v1/generate` or `POST /v1/decode` into typed
 * {@link GenerateEvent}s, using `eventsource-parser`. Worker-safe (web streams only).
 */
import { EventSourceParserStream } from "eventsource-parser/stream";
import { EVENT_SCHEMAS, type GenerateEvent, type GenerateEventName } from "@nest/shared/protocol/events";
import { NestError } from "@nest/shared/protocol/errors";

function isEventName(name: string): name is GenerateEventName {
  return Object.hasOwn(EVENT_SCHEMAS, name);
}

/**
 * Yields each SSE message of `body` as `{ event, data }`, `data` being the JSON payload exactly as
 * sent (checked against the event's zod schema, extra fields kept).
 * @throws NestError `upstream_unavailable` for an unknown event name, non-JSON data or a payload
 *   that does not match its schema; the stream's own read errors propagate unchanged.
 */
export async function* readGenerateEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<GenerateEvent> {
  const reader = body
    .pipeThrough(new TextDecoderStream() as unknown as TransformStream<Uint8Array, string>)
    .pipeThrough(new EventSourceParserStream())
    .getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      const name = value.event ?? "message";
      if (!isEventName(name)) throw new NestError("upstream_unavailable", `unexpected SSE event \`${name}\``);
      let data: unknown;
      try {
        data = JSON.parse(value.data);
      } catch (err) {
        throw new NestError("upstream_unavailable", `SSE event \`${name}\` carries invalid JSON`, { cause: err });
      }
      const checked = EVENT_SCHEMAS[name].safeParse(data);
      if (!checked.success) {
        const issue = checked.error.issues[0];
        const where = issue?.path.join(".") || "(root)";
        throw new NestError("upstream_unavailable", `SSE event \`${name}\` is malformed at ${where}: ${issue?.message}`);
      }
      yield { event: name, data } as GenerateEvent;
    }
  } finally {
    reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}
