/**
 * @module config/node-env
 * Environment variables of the Node processes (gpu-worker, `nestlm serve`, batch consumers, the
 * corpus tools), as one zod schema with their defaults: parsed once per process ({@link nodeEnv}),
 * frozen, then each stage reads only its slice. The schema is plain zod (no Node modules), so the
 * documentation of every variable lives in one place; the Workers edge has its own
 * (`config/workers-env`). Variables other helpers own (runtime options, encode batching, batch
 * queue) are still parsed next to their code and are listed in the README's configuration table.
 */
import { z } from "zod";
import { FUSION_METHODS, DEFAULT_FUSION } from "../retrieve/fusion.ts";

/** `"0"` = off, anything else (or unset) = the default. */
const flagDefaultOn = z.string().optional().transform((v) => v !== "0");
/** `"1"` = on, anything else (or unset) = off. */
const flagDefaultOff = z.string().optional().transform((v) => v === "1");

export const NodeEnvSchema = z.object({
  NEST_KEY_CACHE: flagDefaultOn.describe("`0` keeps encoded passages in memory only (no $NEST_HOME/keys/ files); default on"),
  NEST_CORPUS_KEYS: flagDefaultOn.describe("`0` ignores pre-encoded corpus key files (`nestlm encode`); default on"),
  NEST_FACTBOOK_DENSE: flagDefaultOff.describe("`1`: `setup` also embeds the factbook for hybrid retrieval; default off"),
  NEST_FUSION: z
    .preprocess((v) => (v === "" ? undefined : v), z.enum(FUSION_METHODS).default(DEFAULT_FUSION))
    .describe("fusion of a hybrid index when a request gives none: rrf (default), adaptive, bm25, dense"),
});
export type NodeEnv = Readonly<z.infer<typeof NodeEnvSchema>>;

const parsed = new WeakMap<object, NodeEnv>();

/**
 * The parsed environment, once per `env` object (a second call returns the same frozen record).
 * @throws Error naming the variable when one is malformed (e.g. an unknown `NEST_FUSION`)
 */
export function nodeEnv(env: Record<string, string | undefined>): NodeEnv {
  let out = parsed.get(env);
  if (!out) {
    const r = NodeEnvSchema.safeParse(env);
    if (!r.success) {
      const i = r.error.issues[0]!;
      throw new RangeError(`environment variable ${i.path.join(".")}: ${i.message}`);
    }
    out = Object.freeze(r.data);
    parsed.set(env, out);
  }
  return out;
}
