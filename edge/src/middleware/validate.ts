/**
 * @module middleware/validate
 * Parses and validates the `POST /v1/generate` body against `GenerateRequestSchema`, turning the
 * first problem into a 400 `invalid_request` that names the offending field. Worker-safe.
 */
import type { z } from "zod";
import { GenerateRequestSchema, type GenerateRequest } from "@nest/shared/protocol/request";
import { NestError } from "@nest/shared/protocol/errors";

/** One zod issue as a sentence naming the field, e.g. ``field `gamma`: Too big: expected number to be <=1``. */
export function describeIssue(issue: z.core.$ZodIssue): string {
  if (issue.code === "unrecognized_keys") {
    const keys = issue.keys.map((k) => `\`${k}\``).join(", ");
    return `unknown field${issue.keys.length > 1 ? "s" : ""} ${keys}`;
  }
  const path = issue.path.map(String).join(".");
  return path ? `field \`${path}\`: ${issue.message}` : issue.message;
}

/**
 * Reads `raw`'s body as JSON and validates it, applying the defaults of `GenerateRequestSchema`.
 * @throws NestError `invalid_request` (400) for a body that is not JSON or breaks the schema; the
 *   message names the field (all issues are joined with `; `).
 */
export async function parseGenerateRequest(raw: Request): Promise<GenerateRequest> {
  const text = await raw.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new NestError("invalid_request", "request body is not valid JSON");
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new NestError("invalid_request", "request body must be a JSON object");
  }
  const parsed = GenerateRequestSchema.safeParse(body);
  if (!parsed.success) throw new NestError("invalid_request", parsed.error.issues.map(describeIssue).join("; "));
  return parsed.data;
}
