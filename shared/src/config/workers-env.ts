/**
 * @module config/workers-env
 * The string settings of the edge on Cloudflare Workers (`wrangler.toml` `[vars]` and secrets), as
 * one zod schema with defaults and units. The Worker parses them once per isolate (and again only
 * when they change); bindings (KV namespaces, the rate limiter) are not strings and are passed as
 * they are. Worker-safe.
 */
import { z } from "zod";

/** Comma-separated list, blanks dropped. */
const csv = z
  .string()
  .optional()
  .transform((v) =>
    (v ?? "")
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean),
  );

/** JSON object of corpus → version. */
const versions = z
  .string()
  .optional()
  .transform((v, ctx) => {
    try {
      return JSON.parse(v || "{}") as unknown;
    } catch {
      ctx.addIssue({ code: "custom", message: "not JSON" });
      return z.NEVER;
    }
  })
  .pipe(z.record(z.string(), z.string()));

export const WorkersVarsSchema = z.object({
  NEST_POOL_URL: z
    .string()
    .default("")
    .describe("base URL of the first gpu-worker pool (also its batch job API and, without Upstash, its /v1/retrieve index); empty = none"),
  NEST_POOL_URLS: csv.describe("more pools, comma-separated (least-outstanding-requests routing)"),
  NEST_API_KEY_HASHES: csv.describe("secret: comma-separated hex SHA-256 of static full-access keys"),
  NEST_POOL_SECRET: z.string().optional().describe("secret: HMAC key shared with the pools (their NEST_POOL_SECRET)"),
  NEST_CORPUS_VERSIONS: versions.describe('JSON {"corpus": "version"} for FAQ cache keys; a corpus without a version is not cached'),
  NEST_FAQ_TTL_S: z
    .string()
    .optional()
    .transform((v) => Number(v || 86_400))
    .describe("lifetime of a cached FAQ answer, seconds (KV's minimum is 60); default 86400"),
  UPSTASH_VECTOR_REST_URL: z.string().optional().describe("Upstash Vector REST URL; with the token, retrieval goes to Upstash"),
  UPSTASH_VECTOR_REST_TOKEN: z.string().optional().describe("Upstash Vector REST token"),
  UPSTASH_VECTOR_FUSION: z
    .string()
    .optional()
    .transform((v): "RRF" | "DBSF" => (v === "DBSF" ? "DBSF" : "RRF"))
    .describe("Upstash hybrid fusion: DBSF, else RRF"),
});
export type WorkersVars = Readonly<z.infer<typeof WorkersVarsSchema>>;

/** The raw string settings {@link WorkersVarsSchema} reads. */
export type WorkersVarsInput = z.input<typeof WorkersVarsSchema>;

/**
 * Parses the Worker's string settings.
 * @throws RangeError naming the setting when one is malformed (e.g. NEST_CORPUS_VERSIONS not JSON)
 */
export function parseWorkersVars(env: WorkersVarsInput): WorkersVars {
  const r = WorkersVarsSchema.safeParse(env);
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw new RangeError(`Workers setting ${i.path.join(".")}: ${i.message}`);
  }
  return Object.freeze(r.data);
}
