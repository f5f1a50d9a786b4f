/**
 * @module routes/generate
 * `POST /v1/generate`: validated body → {@link startGeneration} → SSE `retrieval`, `delta`*,
 * `done` | `error` (shared/src/protocol/events.ts) with ids and heartbeats, or one JSON object
 * when the client sends `Accept: application/json`. Header `x-nest-cache: hit|miss`. Worker-safe.
 */
import type { Context } from "hono";
import type { GenerateEvent } from "@nest/shared/protocol/events";
import { ERROR_STATUS, NestError, type ErrorCode } from "@nest/shared/protocol/errors";
import { parseGenerateRequest } from "../middleware/validate.ts";
import { startClientGeneration, type GenerateDeps } from "./generation.ts";
import { streamMessages, type SseMessage } from "./sse.ts";

export type { GenerateDeps } from "./generation.ts";

async function* asMessages(events: AsyncIterable<GenerateEvent>): AsyncGenerator<SseMessage> {
  for await (const ev of events) yield { event: ev.event, data: JSON.stringify(ev.data) };
}

/**
 * Collects a whole generation into `{retrieval, text, deltas, done}`.
 * @throws NestError from an `error` event (its code), or `upstream_unavailable` without `done`.
 */
export async function collectGeneration(events: AsyncIterable<GenerateEvent>) {
  const out: { retrieval?: unknown; text: string; deltas: unknown[]; done?: unknown } = { text: "", deltas: [] };
  for await (const ev of events) {
    if (ev.event === "retrieval") out.retrieval = ev.data;
    else if (ev.event === "delta") {
      out.text += ev.data.text;
      out.deltas.push(ev.data);
    } else if (ev.event === "done") out.done = ev.data;
    else {
      const code = ev.data.error.code;
      throw new NestError(Object.hasOwn(ERROR_STATUS, code) ? (code as ErrorCode) : "upstream_unavailable", ev.data.error.message);
    }
  }
  if (!out.done) throw new NestError("upstream_unavailable", "generation ended before `done`");
  return out;
}

/**
 * The route handler. Errors before the stream starts (bad body, unknown corpus, pool refusal) are
 * thrown and become JSON errors; errors after it started become an SSE `error` event. A client
 * disconnect aborts the pool request (the worker frees its slot).
 */
export function generateHandler(deps: GenerateDeps) {
  return async (c: Context) => {
    const req = await parseGenerateRequest(c.req.raw);
    const gen = await startClientGeneration(c, deps, req);
    c.header("x-nest-cache", gen.cache);
    if ((c.req.header("accept") ?? "").includes("application/json")) {
      return c.json(await collectGeneration(gen.events));
    }
    return streamMessages(c, asMessages(gen.events), {
      heartbeatMs: deps.heartbeatMs,
      onAbort: gen.cancel,
      aborted: gen.aborted,
      log: deps.log,
    });
  };
}
