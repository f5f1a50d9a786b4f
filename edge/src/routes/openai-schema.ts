/**
 * @module routes/openai-schema
 * Request bodies of the OpenAI-compatible routes and their mapping to a {@link GenerateRequest}.
 * Sampling knobs OpenAI clients send by default (`temperature`, `top_p`, penalties, `seed`, `user`)
 * are accepted and ignored: NEST decoding is greedy. NEST parameters go in the extension object
 * `nest` (`mode`, `corpus` and every field of `NestParamsSchema`). Worker-safe.
 */
import { z } from "zod";
import { GenerateRequestSchema, LIMITS, ModeSchema, NestParamsSchema, type GenerateRequest } from "@nest/shared/protocol/request";
import { NestError } from "@nest/shared/protocol/errors";
import { DocumentsSchema } from "@nest/shared/protocol/documents";
import { describeIssue, parseJsonBody } from "../middleware/validate.ts";

const Ignored = {
  temperature: z.number().min(0).max(2).nullable().optional(),
  top_p: z.number().min(0).max(1).nullable().optional(),
  presence_penalty: z.number().nullable().optional(),
  frequency_penalty: z.number().nullable().optional(),
  seed: z.number().int().nullable().optional(),
  user: z.string().max(256).optional(),
  n: z.literal(1).nullable().optional(),
};
const MaxTokens = z.number().int().positive().max(LIMITS.maxNewTokens).nullable().optional();
const Common = {
  model: z.string().min(1).max(128),
  stream: z.boolean().nullable().optional(),
  stream_options: z.object({ include_usage: z.boolean().optional() }).strict().nullable().optional(),
  max_tokens: MaxTokens,
  /** Stop sequences are refused (null or [] accepted): see {@link refuseStop}. */
  stop: z
    .union([z.string(), z.array(z.string()).max(4)])
    .nullable()
    .optional(),
  /** NEST extension: mode, corpus and NEST parameters; `documents` to answer over (protocol/documents.ts). */
  nest: NestParamsSchema.partial()
    .extend({ mode: ModeSchema.optional(), corpus: z.string().optional(), documents: DocumentsSchema.optional() })
    .strict()
    .optional(),
  ...Ignored,
};

const ContentSchema = z.union([z.string(), z.array(z.object({ type: z.literal("text"), text: z.string() }).strict()).min(1)]);

export const ChatCompletionRequestSchema = z
  .object({
    ...Common,
    max_completion_tokens: MaxTokens,
    messages: z
      .array(
        z
          .object({ role: z.enum(["system", "developer", "user", "assistant"]), content: ContentSchema, name: z.string().optional() })
          .strict(),
      )
      .min(1)
      .max(LIMITS.maxMessages),
  })
  .strict();
export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequestSchema>;

export const CompletionRequestSchema = z
  .object({
    ...Common,
    prompt: z.union([z.string(), z.array(z.string()).length(1)]),
  })
  .strict();
export type CompletionRequest = z.infer<typeof CompletionRequestSchema>;

/** A 400 naming the field; `param` is the dotted path of the first issue. */
export class OpenAiParamError extends NestError {
  constructor(
    message: string,
    readonly param: string | null,
  ) {
    super("invalid_request", message);
  }
}

function fail(issues: z.core.$ZodIssue[]): never {
  const first = issues[0];
  // An unknown field is named by its own path (`store_passages`, `nest.foo`), not its object's.
  const path = first === undefined ? [] : first.code === "unrecognized_keys" ? [...first.path, first.keys[0]!] : first.path;
  throw new OpenAiParamError(issues.map(describeIssue).join("; "), path.length ? path.map(String).join(".") : null);
}

/** Reads the body as JSON (lone surrogates replaced). @throws NestError `invalid_json` for non-JSON. */
export async function readJson(raw: Request): Promise<unknown> {
  return parseJsonBody(await raw.text());
}

/**
 * Stop sequences are not supported: a span copied from a passage may run through a stop string in
 * one verified step, and cutting the text there would break the exact citation offsets. A request
 * with one is refused rather than half-honoured.
 * @throws OpenAiParamError (400, `param: "stop"`) for a non-empty `stop`
 */
function refuseStop(stop: string | string[] | null | undefined): void {
  if (stop === undefined || stop === null || (Array.isArray(stop) && stop.length === 0)) return;
  throw new OpenAiParamError("`stop` is not supported by nest (copied spans cross stop strings); leave it out", "stop");
}

function toGenerate(
  fields: Record<string, unknown>,
  nest: ChatCompletionRequest["nest"],
  maxTokens: number | null | undefined,
): GenerateRequest {
  const parsed = GenerateRequestSchema.safeParse({
    ...nest,
    ...fields,
    ...(maxTokens ? { max_new_tokens: maxTokens } : {}),
  });
  if (!parsed.success) {
    // Issues of the mapped request name the field of the client's body: `nest.corpus`, not `corpus`.
    const top = (key: PropertyKey) => (key in fields ? [key] : key === "max_new_tokens" && maxTokens ? ["max_tokens"] : ["nest", key]);
    fail(
      parsed.error.issues.map((issue) =>
        issue.path.length ? { ...issue, path: [...top(issue.path[0]!), ...issue.path.slice(1)] } : issue,
      ),
    );
  }
  return parsed.data;
}

/** Validates a chat body and maps it. @throws OpenAiParamError (400) naming the field. */
export function parseChatRequest(body: unknown): { body: ChatCompletionRequest; request: GenerateRequest } {
  const p = ChatCompletionRequestSchema.safeParse(body);
  if (!p.success) fail(p.error.issues);
  refuseStop(p.data.stop);
  const messages = p.data.messages.map((m) => ({
    role: m.role === "developer" ? "system" : m.role,
    content: typeof m.content === "string" ? m.content : m.content.map((c) => c.text).join(""),
  }));
  return { body: p.data, request: toGenerate({ messages }, p.data.nest, p.data.max_completion_tokens ?? p.data.max_tokens) };
}

/** Validates a completions body and maps it. @throws OpenAiParamError (400) naming the field. */
export function parseCompletionRequest(body: unknown): { body: CompletionRequest; request: GenerateRequest } {
  const p = CompletionRequestSchema.safeParse(body);
  if (!p.success) fail(p.error.issues);
  refuseStop(p.data.stop);
  const prompt = typeof p.data.prompt === "string" ? p.data.prompt : p.data.prompt[0]!;
  return { body: p.data, request: toGenerate({ prompt }, p.data.nest, p.data.max_tokens) };
}
