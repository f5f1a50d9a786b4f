/**
 * @module routes/sse
 * Writes an async sequence of messages as `text/event-stream` (issue 5 §6): every message gets an
 * increasing `id`, a `: keep-alive` comment goes out whenever nothing was sent for `heartbeatMs`
 * (the worker may spend seconds encoding passages before the first token), and framing is
 * correct whatever the payload holds: data is split on CR, LF and CRLF into `data:` lines, so no
 * payload can end a message early or inject a field. Worker-safe.
 */
import type { Context } from "hono";
import { streamSSE, type SSEStreamingApi } from "hono/streaming";
import { toNestError, type NestError } from "@nest/shared/protocol/errors";

/** One SSE message; `event` absent = the default `message` event. */
export interface SseMessage {
  event?: string;
  data: string;
}

/**
 * Frames one message: `event:`, `id:` and one `data:` line per line of `data` (CR, LF, CRLF all
 * split). Event names and ids containing CR/LF are refused (they would break framing).
 * @throws Error for an event name with a line break.
 */
export function frameSse(msg: SseMessage, id: number): string {
  if (msg.event !== undefined && /[\r\n]/.test(msg.event)) throw new Error("SSE event name contains a line break");
  const lines = msg.data.split(/\r\n|\r|\n/);
  return `${msg.event !== undefined ? `event: ${msg.event}\n` : ""}id: ${id}\n${lines.map((l) => `data: ${l}\n`).join("")}\n`;
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
  log?: (line: string) => void;
}

const TICK = Symbol("tick");

/**
 * Streams `messages` to the client as SSE (status 200, `text/event-stream`).
 * Errors thrown by the iterator after the stream began become the messages of `onError`.
 */
export function streamMessages(c: Context, messages: AsyncIterable<SseMessage>, opts: StreamOptions = {}): Response {
  const heartbeatMs = opts.heartbeatMs ?? 2000;
  const res = streamSSE(c, async (stream: SSEStreamingApi) => {
    if (opts.onAbort) stream.onAbort(opts.onAbort);
    let id = 0;
    const it = messages[Symbol.asyncIterator]();
    try {
      // A `next()` still pending when the loop ends (client gone, write failed) may reject later:
      // mark it handled so the runtime does not report an unhandled rejection.
      const next = () => {
        const p = it.next();
        p.catch(() => {});
        return p;
      };
      let pending = next();
      for (;;) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const tick = new Promise<typeof TICK>((r) => (timer = setTimeout(() => r(TICK), heartbeatMs)));
        const r = await Promise.race([pending, tick]).finally(() => clearTimeout(timer));
        if (r === TICK) {
          await stream.write(": keep-alive\n\n");
          continue;
        }
        if (r.done) break;
        await stream.write(frameSse(r.value, id++));
        pending = next();
      }
    } catch (err) {
      if (opts.aborted?.() || stream.aborted) return;
      const e = toNestError(err);
      opts.log?.(`sse: stream error ${e.code}: ${e.message}`);
      const out = opts.onError ? opts.onError(e) : [{ event: "error", data: JSON.stringify(e.toBody()) }];
      for (const m of out) await stream.write(frameSse(m, id++));
    } finally {
      it.return?.(undefined)?.catch(() => {});
    }
  });
  // Behind proxies (issue 14 §8): no transformation or buffering of the stream; and no hop-by-hop
  // `Connection: keep-alive` (Hono's default), so a client's `Connection: close` is honoured.
  res.headers.set("Cache-Control", "no-cache, no-transform");
  res.headers.set("X-Accel-Buffering", "no");
  res.headers.delete("Connection");
  return res;
}
