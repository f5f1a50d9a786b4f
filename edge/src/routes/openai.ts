/**
 * @module routes/openai
 * OpenAI-compatible `POST /v1/chat/completions` and `POST /v1/completions` (issue 5 §3), streaming
 * (`data: {chunk}` … `data: [DONE]`, usage chunk with `stream_options.include_usage`) and not.
 * Each chunk carries the NEST extension field `nest`: the citation of a copied delta (a piece that
 * continues the previous chunk's citation says `continues: true`), and on the last chunk the
 * attribution ratio; a non-streamed answer lists one citation per copied run in `nest.citations`. Errors use OpenAI's shape
 * `{error:{message,type,param,code}}`. Worker-safe.
 */
import { Hono, type Context, type MiddlewareHandler } from "hono";
import type { Citation, DeltaEvent, GenerateEvent, DoneEvent, RetrievalEvent } from "@nest/shared/protocol/events";
import { joinContinuedCitations } from "@nest/shared/protocol/citations";
import { ERROR_STATUS, toNestError } from "@nest/shared/protocol/errors";
import { startClientGeneration, type GenerateDeps } from "./generation.ts";
import { collectGeneration } from "./generate.ts";
import { streamMessages, type SseMessage } from "./sse.ts";
import { OpenAiParamError, parseChatRequest, parseCompletionRequest, readJson } from "./openai-schema.ts";

const ERROR_TYPE: Record<number, string> = {
  401: "authentication_error",
  403: "permission_error",
  429: "rate_limit_error",
};

/** OpenAI's error `type` for an HTTP status: the ones above, any other 4xx `invalid_request_error`, 5xx `server_error`. */
function errorType(status: number): string {
  return ERROR_TYPE[status] ?? (status >= 400 && status < 500 ? "invalid_request_error" : "server_error");
}

/** The HTTP status of an error code from an SSE `error` event (500 for a code this edge does not know). */
function errorStatus(code: string): number {
  return (ERROR_STATUS as Record<string, number>)[code] ?? 500;
}

/** OpenAI's error body for anything thrown. */
export function openAiError(err: unknown) {
  const e = toNestError(err);
  return {
    status: e.status,
    retryAfterS: e.retryAfterS,
    body: {
      error: {
        message: e.message,
        type: errorType(e.status),
        param: err instanceof OpenAiParamError ? err.param : null,
        code: e.code,
      },
    },
  };
}

function usageOf(done: DoneEvent) {
  const u = done.usage;
  return { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens, total_tokens: u.prompt_tokens + u.completion_tokens };
}

function passagesOf(r: RetrievalEvent | undefined) {
  return (r?.passages ?? []).map(({ id, title, source, score, rank }) => ({ id, title, source, score, rank }));
}

type Kind = "chat" | "text";

async function* chunks(kind: Kind, events: AsyncIterable<GenerateEvent>, model: string, includeUsage: boolean): AsyncGenerator<SseMessage> {
  const id = `${kind === "chat" ? "chatcmpl" : "cmpl"}-${crypto.randomUUID().replace(/-/g, "")}`;
  const created = Math.floor(Date.now() / 1000);
  const object = kind === "chat" ? "chat.completion.chunk" : "text_completion";
  const chunk = (choice: Record<string, unknown>, nest: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
    data: JSON.stringify({ id, object, created, model, choices: [{ index: 0, logprobs: null, ...choice }], ...extra, nest }),
  });
  let retrieval: RetrievalEvent | undefined;
  for await (const ev of events) {
    if (ev.event === "retrieval") {
      retrieval = ev.data;
      if (kind === "chat")
        yield chunk({ delta: { role: "assistant", content: "" }, finish_reason: null }, { passages: passagesOf(retrieval) });
    } else if (ev.event === "delta") {
      const nest = ev.data.citation ? { citation: ev.data.citation } : {};
      yield kind === "chat"
        ? chunk({ delta: { content: ev.data.text }, finish_reason: null }, nest)
        : chunk({ text: ev.data.text, finish_reason: null }, nest);
    } else if (ev.event === "done") {
      const nest = { attribution_ratio: ev.data.usage.attribution_ratio, mode: ev.data.mode, model: ev.data.model, usage: ev.data.usage };
      yield kind === "chat"
        ? chunk({ delta: {}, finish_reason: ev.data.finish_reason }, nest)
        : chunk({ text: "", finish_reason: ev.data.finish_reason }, nest);
      if (includeUsage) yield { data: JSON.stringify({ id, object, created, model, choices: [], usage: usageOf(ev.data) }) };
    } else {
      yield {
        data: JSON.stringify({
          error: {
            message: ev.data.error.message,
            type: errorType(errorStatus(ev.data.error.code)),
            param: null,
            code: ev.data.error.code,
          },
        }),
      };
      break;
    }
  }
  yield { data: "[DONE]" };
}

function handler(deps: GenerateDeps, kind: Kind) {
  return async (c: Context) => {
    const raw = await readJson(c.req.raw);
    const { body, request } = kind === "chat" ? parseChatRequest(raw) : parseCompletionRequest(raw);
    const gen = await startClientGeneration(c, deps, request);
    c.header("x-nest-cache", gen.cache);
    const model = (await deps.pool.modelName?.()) ?? body.model;
    if (body.stream) {
      return streamMessages(c, chunks(kind, gen.events, model, body.stream_options?.include_usage === true), {
        heartbeatMs: deps.heartbeatMs,
        onAbort: gen.cancel,
        aborted: gen.aborted,
        onError: (e) => [{ data: JSON.stringify(openAiError(e).body) }, { data: "[DONE]" }],
        log: deps.log,
      });
    }
    const out = await collectGeneration(gen.events);
    const done = out.done as DoneEvent;
    const citations = joinContinuedCitations((out.deltas as DeltaEvent[]).flatMap((d): Citation[] => (d.citation ? [d.citation] : [])));
    const choice =
      kind === "chat"
        ? { index: 0, message: { role: "assistant", content: out.text, refusal: null }, finish_reason: done.finish_reason, logprobs: null }
        : { index: 0, text: out.text, finish_reason: done.finish_reason, logprobs: null };
    return c.json({
      id: `${kind === "chat" ? "chatcmpl" : "cmpl"}-${crypto.randomUUID().replace(/-/g, "")}`,
      object: kind === "chat" ? "chat.completion" : "text_completion",
      created: Math.floor(Date.now() / 1000),
      model,
      choices: [choice],
      usage: usageOf(done),
      nest: {
        citations,
        attribution_ratio: done.usage.attribution_ratio,
        passages: passagesOf(out.retrieval as RetrievalEvent),
        usage: done.usage,
        timings_ms: done.timings_ms,
      },
    });
  };
}

/**
 * The OpenAI-compatible routes as a sub-app to mount at `/v1` (its own `onError` answers OpenAI's
 * error shape, with `Retry-After` on 429/503).
 * @param guard middleware run first (auth with scope `generate`, body limit)
 */
/** The paths (under `/v1`) whose errors take OpenAI's shape, including 404/405 from the app's fallback. */
export const OPENAI_PATHS: readonly string[] = ["/v1/chat/completions", "/v1/completions"];

export function openAiRoutes(deps: GenerateDeps, guard: MiddlewareHandler[]): Hono {
  const app = new Hono();
  app.post("/chat/completions", ...(guard as [MiddlewareHandler, MiddlewareHandler]), handler(deps, "chat"));
  app.post("/completions", ...(guard as [MiddlewareHandler, MiddlewareHandler]), handler(deps, "text"));
  app.onError((err, c) => {
    const e = openAiError(err);
    if (e.retryAfterS !== undefined) c.header("Retry-After", String(Math.ceil(e.retryAfterS)));
    if (e.status === 401) c.header("WWW-Authenticate", 'Bearer realm="nest"');
    return c.json(e.body, e.status as 400);
  });
  return app;
}
