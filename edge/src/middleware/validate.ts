/**
 * @module middleware/validate
 * Parses and validates the `POST /v1/generate` body against `GenerateRequestSchema`, turning the
 * first problem into a 400 `invalid_request` that names the offending field; a body that is not JSON
 * is a 400 `invalid_json`. Every string of a parsed body has its lone UTF-16 surrogates replaced by
 * U+FFFD, so no field the API echoes (`retrieval.query`, error messages, batch `custom_id`s) carries
 * ill-formed UTF-16. Worker-safe.
 */
import type { z } from "zod";
import { GenerateRequestSchema, type GenerateRequest } from "@nest/shared/protocol/request";
import { NestError } from "@nest/shared/protocol/errors";
import { wellFormed, wellFormedReviver } from "@nest/shared/protocol/well-formed";

/** One zod issue as a sentence naming the field, e.g. ``field `gamma`: Too big: expected number to be <=1``. */
export function describeIssue(issue: z.core.$ZodIssue): string {
  if (issue.code === "unrecognized_keys") {
    const keys = issue.keys.map((k) => `\`${k}\``).join(", ");
    return wellFormed(`unknown field${issue.keys.length > 1 ? "s" : ""} ${keys}`);
  }
  const path = issue.path.map(String).join(".");
  return wellFormed(path ? `field \`${path}\`: ${issue.message}` : issue.message);
}

export { wellFormed };

/**
 * Parses a request body as JSON, every string value made {@link wellFormed} (keys are echoed only
 * by {@link describeIssue}, which cleans its message).
 * @throws NestError `invalid_json` (400) for text that is not JSON; `invalid_request` (400) for JSON
 *   nested deeper than the parser's stack allows (thousands of levels; no request needs more than a few)
 */
export function parseJsonBody(text: string): unknown {
  try {
    return JSON.parse(text, wellFormedReviver);
  } catch (e) {
    if (e instanceof SyntaxError) throw new NestError("invalid_json", "request body is not valid JSON");
    throw new NestError("invalid_request", "request body is nested too deeply");
  }
}

/**
 * Reads `raw`'s body as JSON and validates it, applying the defaults of `GenerateRequestSchema`.
 * @throws NestError `invalid_json` (400) for a body that is not JSON; `invalid_request` (400) for one
 *   that breaks the schema; the message names the field (all issues are joined with `; `).
 */
export async function parseGenerateRequest(raw: Request): Promise<GenerateRequest> {
  const body = parseJsonBody(await raw.text());
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new NestError("invalid_request", "request body must be a JSON object");
  }
  const parsed = GenerateRequestSchema.safeParse(body);
  if (!parsed.success) throw new NestError("invalid_request", parsed.error.issues.map(describeIssue).join("; "));
  return parsed.data;
}
