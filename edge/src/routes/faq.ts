/**
 * @module routes/faq
 * Cache warming (issue 5 §2), scope `admin`:
 * - `POST /v1/faq/warm` `{questions: string[1..1000], mode?, corpus?, max_new_tokens?, …NEST params}`
 *   submits one batch item per question to the pool's job API (the batch queue) → 202
 *   `{batch_id, questions}`; 400 `invalid_request` naming the field (`questions.i` for a bad
 *   question; `prompt`/`messages` are refused: the questions are the prompts), 404 `not_found` for a
 *   corpus this edge does not know;
 * - `GET /v1/faq/warm/:id` reads the batch's finished results and stores each answer in the FAQ
 *   cache under the key a live request with the same question and parameters would use →
 *   `{batch_id, status, cached, failed}`. Call it until `status` is `completed`. Worker-safe.
 *
 * A cached answer is the event sequence a live `/v1/generate` would have sent: its `retrieval`
 * event comes from the generation pipeline on the edge (`@nest/shared/generation/pipeline`:
 * `requestIndex`, `retrieve`, as in `routes/generation.ts`); its deltas (rebuilt from text and
 * citations) and `done` (usage, the pipeline's timings) are the batch item's, which the batch
 * consumer produced through the same pipeline.
 */
import type { Hono, MiddlewareHandler } from "hono";
import type { EdgeEnv } from "../env.ts";
import { z } from "zod";
import { GenerateRequestSchema, type GenerateRequest } from "@nest/shared/protocol/request";
import { DOCUMENTS_CORPUS } from "@nest/shared/protocol/documents";
import { requestIndex, retrieve } from "@nest/shared/generation/pipeline";
import type { PassageIndex } from "@nest/shared/retrieve/passage-index";
import type { Citation, DoneEvent, GenerateEvent } from "@nest/shared/protocol/events";
import { NestError } from "@nest/shared/protocol/errors";
import { describeIssue, parseJsonBody } from "../middleware/validate.ts";
import { ownedPath } from "./batches.ts";
import { errorFromResponse, joinUrl } from "../route/pool-client.ts";
import { faqCacheKey } from "../cache/faq-cache.ts";
import type { GenerateDeps } from "./generation.ts";

const WarmSchema = z.object({ questions: z.array(z.string().min(1).max(8000)).min(1).max(1000) }).passthrough();

/** Rebuilds delta events from a finished text and its citations (uncited gaps become LM deltas). */
export function deltasFrom(text: string, citations: readonly Citation[]): GenerateEvent[] {
  const out: GenerateEvent[] = [];
  let at = 0;
  for (const c of [...citations].sort((a, b) => a.text_start - b.text_start)) {
    if (c.text_start > at) out.push({ event: "delta", data: { text: text.slice(at, c.text_start), tokens: 0 } });
    out.push({ event: "delta", data: { text: text.slice(c.text_start, c.text_end), tokens: 0, citation: c } });
    at = c.text_end;
  }
  if (at < text.length) out.push({ event: "delta", data: { text: text.slice(at), tokens: 0 } });
  return out;
}

/** A line of the job API's results (`gpu-worker/src/batch/protocol.ts`): a finished item carries its `done` fields. */
interface ResultLine extends Partial<DoneEvent> {
  custom_id: string | null;
  status: string;
  text?: string;
  citations?: Citation[];
}

/** Adds the warm routes. */
export function registerFaqRoutes(
  app: Hono<EdgeEnv>,
  deps: GenerateDeps,
  opts: { poolUrl: string; fetch?: typeof fetch; guard: MiddlewareHandler[]; json?: MiddlewareHandler },
): void {
  const fetchFn = opts.fetch ?? ((i, init) => fetch(i, init));
  async function call(path: string, init: RequestInit = {}): Promise<Response> {
    let res: Response;
    try {
      res = await fetchFn(joinUrl(opts.poolUrl, path), init);
    } catch (err) {
      throw new NestError("upstream_unavailable", `batch job API unreachable: ${(err as Error).message}`);
    }
    if (!res.ok) throw await errorFromResponse(res, "batch job API");
    return res;
  }

  const postGuard = [...opts.guard, ...(opts.json ? [opts.json] : [])] as [MiddlewareHandler];
  app.post("/v1/faq/warm", ...postGuard, async (c) => {
    if (!deps.faqCache) throw new NestError("not_found", "the FAQ cache is not configured");
    const raw = parseJsonBody(await c.req.text());
    const body = WarmSchema.safeParse(raw);
    if (!body.success) throw new NestError("invalid_request", body.error.issues.map(describeIssue).join("; "));
    const { questions, ...params } = body.data;
    for (const field of ["prompt", "messages"]) {
      if (field in params)
        throw new NestError("invalid_request", `field \`${field}\`: not allowed here; each of \`questions\` is a prompt`);
    }
    const requests = questions.map((prompt, i) => {
      const r = GenerateRequestSchema.safeParse({ ...params, prompt });
      if (!r.success) {
        // The question is the request's prompt: an issue with it names `questions.i`.
        const issues = r.error.issues.map((issue) =>
          issue.path[0] === "prompt" ? { ...issue, path: ["questions", i, ...issue.path.slice(1)] } : issue,
        );
        throw new NestError("invalid_request", issues.map(describeIssue).join("; "));
      }
      return r.data;
    });
    // The questions share their parameters: a corpus this edge cannot retrieve from is refused
    // now (404 `not_found`, as /v1/generate answers), not after the batch ran.
    await requestIndex(requests[0]!, (corpus) => deps.indexFor(corpus));
    const items = requests.map((r, i) => JSON.stringify({ custom_id: String(i), ...r }));
    const res = await call(ownedPath(c, "/v1/batches"), {
      method: "POST",
      headers: { "content-type": "application/x-ndjson" },
      body: items.join("\n"),
    });
    const status = (await res.json()) as { id: string };
    // The job API's result lines do not repeat the request: keep them for the cache keys.
    await deps.faqCache.kv.put(`faqwarm:${status.id}`, JSON.stringify(requests), 7 * 86_400);
    return c.json({ batch_id: status.id, questions: questions.length }, 202);
  });

  app.get("/v1/faq/warm/:id", ...(opts.guard as [MiddlewareHandler]), async (c) => {
    if (!deps.faqCache || !deps.corpusVersion) throw new NestError("not_found", "the FAQ cache is not configured");
    const id = c.req.param("id") ?? "";
    if (!/^batch_[0-9a-f]{24}$/.test(id)) throw new NestError("not_found", `no batch \`${id.slice(0, 64)}\``);
    const res = await call(ownedPath(c, `/v1/batches/${id}/results`));
    const batchStatus = res.headers.get("x-batch-status") ?? "unknown";
    const lines = (await res.text())
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l) as ResultLine);
    const stored = await deps.faqCache.kv.get(`faqwarm:${id}`);
    if (stored === null) throw new NestError("not_found", `batch \`${id}\` was not submitted by /v1/faq/warm`);
    const requests = JSON.parse(stored) as GenerateRequest[];
    let cached = 0;
    let failed = 0;
    for (const line of lines) {
      if (line.status !== "done" || line.text === undefined) {
        failed++;
        continue;
      }
      const req = requests[Number(line.custom_id)];
      if (!req) continue;
      cached += (await cacheLine(deps, req, line)) ? 1 : 0;
    }
    return c.json({ batch_id: id, status: batchStatus, cached, failed });
  });
}

/**
 * Stores one finished item under its live request's cache key; false (nothing stored) when the
 * corpus has no version, the line no model, or the corpus is unknown here.
 * @throws the index's errors (NestError `upstream_unavailable`, …) and the cache's
 */
async function cacheLine(deps: GenerateDeps, req: GenerateRequest, line: ResultLine): Promise<boolean> {
  // A request's documents are its corpus (their hash is in the key), as for a live request.
  const [version, model] = [req.documents ? DOCUMENTS_CORPUS : await deps.corpusVersion!(req.corpus), line.model];
  if (!version || !model) return false;
  const t0 = performance.now();
  let index: PassageIndex;
  try {
    index = await requestIndex(req, (corpus) => deps.indexFor(corpus));
  } catch (err) {
    if (err instanceof NestError && err.code === "not_found") return false;
    throw err;
  }
  const retrieval = await retrieve(index, req, t0);
  const events: GenerateEvent[] = [
    { event: "retrieval", data: retrieval.event },
    ...deltasFrom(line.text!, line.citations ?? []),
    {
      event: "done",
      data: { finish_reason: line.finish_reason!, mode: line.mode!, model, usage: line.usage!, timings_ms: line.timings_ms! },
    },
  ];
  await deps.faqCache!.put(await faqCacheKey(req, { corpusVersion: version, model }), events);
  return true;
}
