/**
 * @module batch/protocol
 * Batch jobs (issue 6): the submitted items, the status answer and the JSONL result lines of
 * `/v1/batches`. Pure (zod only), so it could move to `shared/src/protocol/batch.ts` as is.
 *
 * A batch body is JSONL (one generation request per line) or a JSON array of them. Each request is
 * a `POST /v1/generate` body ({@link GenerateRequestSchema}) plus an optional `custom_id`
 * (1..64 chars, unique within the batch). Blank lines are skipped; line numbers in errors are 1-based.
 * Lone UTF-16 surrogates in any string become U+FFFD while parsing (they would be echoed in results).
 */
import { z } from "zod";
import { GenerateRequestSchema, type GenerateRequest } from "@nest/shared/protocol/request";
import { CitationSchema, DoneEventSchema } from "@nest/shared/protocol/events";
import { NestError } from "@nest/shared/protocol/errors";
import { wellFormedReviver } from "@nest/shared/protocol/well-formed";

/** Most items one batch may hold. */
export const MAX_BATCH_ITEMS = 10_000;

/** Longest accepted `Idempotency-Key` header (characters). */
export const MAX_IDEMPOTENCY_KEY_CHARS = 255;

export const CustomIdSchema = z.string().min(1).max(64);

/** One validated batch item: its 0-based position, its `custom_id` (null when absent) and the request. */
export interface BatchItem {
  readonly index: number;
  readonly custom_id: string | null;
  readonly request: GenerateRequest;
}

/** What an item's BullMQ job carries. */
export interface BatchJobData {
  readonly batch_id: string;
  readonly index: number;
  readonly custom_id: string | null;
  readonly request: GenerateRequest;
}

/** What a successful item returns (stored as the BullMQ job's return value). */
export const ItemOutputSchema = DoneEventSchema.extend({
  /** The generated text (concatenation of the deltas). */
  text: z.string(),
  /** Citations of the copied spans; `text_start`/`text_end` index into `text` (UTF-16). */
  citations: z.array(CitationSchema),
});
export type ItemOutput = z.infer<typeof ItemOutputSchema>;

/** One line of `GET /v1/batches/:id/results`. `attempts` counts processing attempts (retries included). */
export const BatchResultLineSchema = z.discriminatedUnion("status", [
  ItemOutputSchema.extend({
    index: z.number().int().nonnegative(),
    custom_id: CustomIdSchema.nullable(),
    status: z.literal("done"),
    attempts: z.number().int().positive(),
  }),
  z.object({
    index: z.number().int().nonnegative(),
    custom_id: CustomIdSchema.nullable(),
    status: z.literal("failed"),
    error: z.object({ code: z.string(), message: z.string() }),
    attempts: z.number().int().nonnegative(),
  }),
  z.object({
    index: z.number().int().nonnegative(),
    custom_id: CustomIdSchema.nullable(),
    status: z.literal("canceled"),
  }),
]);
export type BatchResultLine = z.infer<typeof BatchResultLineSchema>;

/**
 * Batch states: `queued` (nothing started), `running`, `completed` (every item done or failed),
 * `canceling` (cancel asked, items still running), `canceled` (cancel asked, nothing left to run).
 */
export const BatchStateSchema = z.enum(["queued", "running", "completed", "canceling", "canceled"]);
export type BatchState = z.infer<typeof BatchStateSchema>;

/** `GET /v1/batches/:id` answer. */
export const BatchStatusSchema = z.object({
  id: z.string(),
  status: BatchStateSchema,
  /** ISO 8601 times. */
  created_at: z.string(),
  canceled_at: z.string().nullable(),
  total: z.number().int().positive(),
  /** Item counts; they add up to `total`. `queued` includes items waiting for a retry (backoff). */
  counts: z.object({
    queued: z.number().int().nonnegative(),
    running: z.number().int().nonnegative(),
    done: z.number().int().nonnegative(),
    failed: z.number().int().nonnegative(),
    canceled: z.number().int().nonnegative(),
  }),
  /** Finished items (done + failed + canceled) / total, in [0, 1]. */
  progress: z.number().min(0).max(1),
});
export type BatchStatus = z.infer<typeof BatchStatusSchema>;

/** `POST /v1/batches` answer: the status, plus whether an earlier submission with the same key was returned. */
export const SubmitResponseSchema = BatchStatusSchema.extend({ idempotent_replay: z.boolean() });
export type SubmitResponse = z.infer<typeof SubmitResponseSchema>;

function describeIssue(err: z.ZodError): string {
  const issue = err.issues[0];
  const path = issue?.path.length ? `${issue.path.join(".")}: ` : "";
  return `${path}${issue?.message ?? "invalid"}`;
}

/**
 * Validates one raw item (already JSON-parsed).
 * @param where e.g. `line 3` or `item 2`, used in error messages
 * @throws NestError `invalid_request` naming `where` and the first problem
 */
export function parseBatchItem(raw: unknown, index: number, where: string): BatchItem {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new NestError("invalid_request", `${where}: expected a JSON object (a generation request)`);
  }
  const { custom_id: customId, ...request } = raw as Record<string, unknown>;
  let custom_id: string | null = null;
  if (customId !== undefined) {
    const id = CustomIdSchema.safeParse(customId);
    if (!id.success) throw new NestError("invalid_request", `${where}: custom_id: ${describeIssue(id.error)}`);
    custom_id = id.data;
  }
  const req = GenerateRequestSchema.safeParse(request);
  if (!req.success) throw new NestError("invalid_request", `${where}: ${describeIssue(req.error)}`);
  return { index, custom_id, request: req.data };
}

/** A parsed item and where it came from (`line 3`, `item 2`), for error messages. */
interface PlacedItem {
  readonly item: BatchItem;
  readonly where: string;
}

function parsePlaced(body: string, maxItems: number): PlacedItem[] {
  const placed: PlacedItem[] = [];
  const trimmed = body.trimStart();
  const tooMany = () => new NestError("payload_too_large", `a batch holds at most ${maxItems} requests`);
  if (trimmed.startsWith("[")) {
    let arr: unknown[];
    try {
      arr = JSON.parse(body, wellFormedReviver) as unknown[];
    } catch (e) {
      throw new NestError("invalid_request", `body is not valid JSON: ${(e as Error).message}`);
    }
    if (arr.length > maxItems) throw tooMany();
    arr.forEach((raw, i) => placed.push({ item: parseBatchItem(raw, i, `item ${i + 1}`), where: `item ${i + 1}` }));
  } else {
    const lines = body.split(/\r?\n/);
    for (let n = 0; n < lines.length; n++) {
      const line = lines[n]!.trim();
      if (line === "") continue;
      if (placed.length >= maxItems) throw tooMany();
      let raw: unknown;
      try {
        raw = JSON.parse(line, wellFormedReviver);
      } catch (e) {
        throw new NestError("invalid_request", `line ${n + 1}: not valid JSON: ${(e as Error).message}`);
      }
      placed.push({ item: parseBatchItem(raw, placed.length, `line ${n + 1}`), where: `line ${n + 1}` });
    }
  }
  if (placed.length === 0) throw new NestError("invalid_request", "the batch is empty: send JSONL (one request per line) or a JSON array");
  const seen = new Set<string>();
  for (const { item: it } of placed) {
    if (it.custom_id === null) continue;
    if (seen.has(it.custom_id)) throw new NestError("invalid_request", `duplicate custom_id \`${it.custom_id}\` (item ${it.index + 1})`);
    seen.add(it.custom_id);
  }
  return placed;
}

/**
 * Parses a batch body: a JSON array of requests, or JSONL (one request per line, blank lines skipped).
 * @param maxItems most items accepted (default {@link MAX_BATCH_ITEMS})
 * @throws NestError `invalid_request` for bad JSON, a bad request (with its 1-based line or item
 *   number), a duplicate `custom_id`, an empty batch; `payload_too_large` beyond `maxItems`
 */
export function parseBatchBody(body: string, maxItems = MAX_BATCH_ITEMS): BatchItem[] {
  return parsePlaced(body, maxItems).map((p) => p.item);
}

/**
 * {@link parseBatchBody}, then refuses the first item (in input order) whose `corpus` the pool does
 * not serve, as `/v1/generate` refuses it: an item with `documents` retrieves from them and is not
 * checked. Each distinct corpus is looked up once.
 * @param hasCorpus whether the pool serves `corpus` (has its passage index)
 * @throws what {@link parseBatchBody} throws; NestError `not_found` (404) naming the line or item
 *   and the field: `line 3: corpus: unknown corpus \`nope\``
 */
export async function parseServableBatchBody(
  body: string,
  hasCorpus: (corpus: string) => Promise<boolean>,
  maxItems = MAX_BATCH_ITEMS,
): Promise<BatchItem[]> {
  const placed = parsePlaced(body, maxItems);
  const served = new Map<string, Promise<boolean>>();
  for (const { item, where } of placed) {
    if (item.request.documents) continue;
    const corpus = item.request.corpus;
    let known = served.get(corpus);
    if (!known) served.set(corpus, (known = hasCorpus(corpus)));
    if (!(await known)) throw new NestError("not_found", `${where}: corpus: unknown corpus \`${corpus}\``);
  }
  return placed.map((p) => p.item);
}

/**
 * Splits a stored failure reason `"<code>: <message>"` (how the consumer fails items) into its parts;
 * anything else is `internal`.
 */
export function splitFailure(reason: string | undefined): { code: string; message: string } {
  const m = /^([a-z_]+): ([\s\S]*)$/.exec(reason ?? "");
  return m ? { code: m[1]!, message: m[2]! } : { code: "internal", message: reason || "unknown failure" };
}

/** Failure code of items skipped because their batch was canceled before they started. */
export const CANCELED_CODE = "canceled";
