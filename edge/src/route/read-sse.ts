/**
 * @module route/read-sse
 * Reads a `text/event-stream` body of `POST /v1/generate` or `POST /v1/decode` into typed
 * {@link GenerateEvent}s, using `eventsource-parser`. Worker-safe (web streams only).
 *
 * The body is read with its own reader, decoded with a streaming `TextDecoder` and fed to
 * `eventsource-parser`'s `createParser`, not piped through `TextDecoderStream` and
 * `EventSourceParserStream` (issue 17): in workerd, cancelling a `pipeThrough` chain over a fetch
 * body before it ends (the edge stops reading at `done`, or the client leaves) rejects the chain's
 * internal pipe promise with `Error: undefined`, which no caller can handle; it surfaced as the
 * workerd suite's intermittent unhandled rejection. Cancelling the body's own reader does not
 * (test/workerd/stream-teardown.test.ts).
 */
import { createParser, type EventSourceMessage } from "eventsource-parser";
import { EVENT_SCHEMAS, type GenerateEvent, type GenerateEventName } from "@nest/shared/protocol/events";
import { NestError } from "@nest/shared/protocol/errors";
import { logRejection, stopReason } from "../rejections.ts";

function isEventName(name: string): name is GenerateEventName {
  return Object.hasOwn(EVENT_SCHEMAS, name);
}

function toEvent(msg: EventSourceMessage): GenerateEvent {
  const name = msg.event ?? "message";
  if (!isEventName(name)) throw new NestError("upstream_unavailable", `unexpected SSE event \`${name}\``);
  let data: unknown;
  try {
    data = JSON.parse(msg.data);
  } catch (err) {
    throw new NestError("upstream_unavailable", `SSE event \`${name}\` carries invalid JSON`, { cause: err });
  }
  const checked = EVENT_SCHEMAS[name].safeParse(data);
  if (!checked.success) {
    const issue = checked.error.issues[0];
    const where = issue?.path.join(".") || "(root)";
    throw new NestError("upstream_unavailable", `SSE event \`${name}\` is malformed at ${where}: ${issue?.message}`);
  }
  return { event: name, data } as GenerateEvent;
}

/**
 * Yields each SSE message of `body` as `{ event, data }`, `data` being the JSON payload exactly as
 * sent (checked against the event's zod schema, extra fields kept). Stopping early (`return`,
 * `break`, a throw) cancels `body` with a {@link NestError} reason; a failing cancel is logged.
 * @param log where a failed cancel of the body is reported (default `console.warn`)
 * @throws NestError `upstream_unavailable` for an unknown event name, non-JSON data or a payload
 *   that does not match its schema; the stream's own read errors propagate unchanged.
 */
export async function* readGenerateEvents(
  body: ReadableStream<Uint8Array>,
  log: (line: string) => void = (line) => console.warn(line),
): AsyncGenerator<GenerateEvent> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const parsed: EventSourceMessage[] = [];
  const parser = createParser({ onEvent: (msg) => parsed.push(msg) });
  let ended = false;
  try {
    for (;;) {
      while (parsed.length > 0) yield toEvent(parsed.shift()!);
      if (ended) return;
      const { value, done } = await reader.read();
      if (done) {
        ended = true;
        parser.feed(decoder.decode());
      } else {
        parser.feed(decoder.decode(value, { stream: true }));
      }
    }
  } finally {
    if (!ended)
      await logRejection(
        reader.cancel(stopReason("the reader of an SSE body stopped before its end")),
        "read-sse: cancel of the SSE body",
        log,
      );
    reader.releaseLock();
  }
}
