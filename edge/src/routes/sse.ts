/**
 * @module routes/sse
 * Writes an async sequence of messages as `text/event-stream` (issue 5 §6) with hono's
 * `streamSSE`/`writeSSE`, the writer the gpu-worker uses too (issue 11 item 6): every message gets
 * an increasing `id`, a `: keep-alive` comment goes out whenever nothing was sent for
 * `heartbeatMs` (the worker may spend seconds encoding passages before the first token), and
 * framing is correct whatever the payload holds: `writeSSE` splits data on CR, LF and CRLF into
 * `data:` lines, so no payload can end a message early or inject a field, and it refuses an event
 * name with a line break. Cached answers are replayed through the same path. Worker-safe.
 */
import type { Context } from "hono";
import { streamSSE, type SSEStreamingApi } from "hono/streaming";
import { toNestError, type NestError } from "@nest/shared/protocol/errors";
import { logRejection, type LogLine } from "../rejections.ts";

/** One SSE message; `event` absent = the default `message` event. */
export interface SseMessage {
  event?: string;
  data: string;
}

export interface StreamOptions {
  /** Milliseconds of silence before a heartbeat comment (default 2000). */
  heartbeatMs?: number;
  /** Called when the client goes away (cancel the upstream here). */
  onAbort?: () => void;
  /** Whether the failure came from the client leaving (then nothing more is written). */
  aborted?: () => boolean;
  /** Turns an error thrown mid-stream into final messages (default: one `error` event). */
  onError?: (e: NestError) => SseMessage[];
  /** Where stream errors and failures after the stream ended are reported (default `console.warn`). */
  log?: LogLine;
}

const TICK = Symbol("tick");

/**
 * Streams `messages` to the client as SSE (status 200, `text/event-stream`).
 * Errors thrown by the iterator after the stream began become the messages of `onError`; an event
 * name containing CR or LF is such an error (hono's `writeSSE` throws), so it never reaches the
 * wire.
 */
export function streamMessages(c: Context, messages: AsyncIterable<SseMessage>, opts: StreamOptions = {}): Response {
  const heartbeatMs = opts.heartbeatMs ?? 2000;
  const log = opts.log ?? ((line: string) => console.warn(line));
  const res = streamSSE(c, async (stream: SSEStreamingApi) => {
    if (opts.onAbort) stream.onAbort(opts.onAbort);
    let id = 0;
    const write = async (m: SseMessage) => {
      await stream.writeSSE({ ...m, id: String(id) });
      id++;
    };
    const it = messages[Symbol.asyncIterator]();
    // The `next()` in flight when the loop ends (client gone, write failed) may reject later: it
    // always has a handler that logs, so it can never be an unhandled rejection.
    let orphan: Promise<IteratorResult<SseMessage>> | undefined;
    try {
      for (;;) {
        const pending = it.next();
        orphan = pending;
        for (;;) {
          let timer: ReturnType<typeof setTimeout> | undefined;
          const tick = new Promise<typeof TICK>((r) => (timer = setTimeout(() => r(TICK), heartbeatMs)));
          let r: IteratorResult<SseMessage> | typeof TICK;
          try {
            r = await Promise.race([pending, tick]);
          } catch (err) {
            orphan = undefined; // its rejection is this error, handled below
            throw err;
          } finally {
            clearTimeout(timer);
          }
          if (r === TICK) {
            await stream.write(": keep-alive\n\n");
            continue;
          }
          orphan = undefined;
          if (r.done) return;
          await write(r.value);
          break;
        }
      }
    } catch (err) {
      if (opts.aborted?.() || stream.aborted) return;
      const e = toNestError(err);
      log(`sse: stream error ${e.code}: ${e.message}`);
      const out = opts.onError ? opts.onError(e) : [{ event: "error", data: JSON.stringify(e.toBody()) }];
      for (const m of out) await write(m);
    } finally {
      if (orphan) void logRejection(orphan, "sse: the source's next() after the stream ended", log);
      const closing = it.return?.(undefined);
      if (closing) void logRejection(closing, "sse: closing the source", log);
    }
  });
  // Behind proxies (issue 14 §8): no transformation or buffering of the stream; and no hop-by-hop
  // `Connection: keep-alive` (Hono's default), so a client's `Connection: close` is honoured.
  res.headers.set("Cache-Control", "no-cache, no-transform");
  res.headers.set("X-Accel-Buffering", "no");
  res.headers.delete("Connection");
  return res;
}
