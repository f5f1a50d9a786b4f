/**
 * @module config/node-env
 * Every environment variable of the Node processes (the gpu-worker `worker-main.ts`, the batch
 * consumer `consumer-main.ts`, `nestlm serve` and the other `nestlm` commands), as one zod schema:
 * each variable's check, default and description (units included) live here and nowhere else; the
 * README's configuration table follows it. Each process entry point parses the environment once at
 * boot ({@link nodeEnv}: empty strings count as unset, a malformed value throws naming the
 * variable), and hands each stage only its frozen slice ({@link NodeEnv}: `runtime` to the decoder
 * session, `encode` to the passage encoder, `batch` to the queue, …); library code takes its slice
 * or options as a parameter and never reads `process.env`. The one exception is `NEST_HOME`, declared
 * here but resolved by `nestHome()` (`@nest/corpus/home`) because its default needs `os.homedir()`
 * and every cache path defaults to it. LanceDB's own variables (`LANCEDB_LOG`, `LANCE_CPU_THREADS`)
 * are set for the native library by `@nest/corpus/lancedb-log`. Plain zod, no Node modules; the
 * Workers edge has its own settings (`config/workers-env`).
 */
import { z } from "zod";
import { FUSION_METHODS, DEFAULT_FUSION } from "../retrieve/fusion.ts";

/**
 * Decoder graphs and weight precisions (`nestlm setup --precision P` prepares all but fp32).
 * `fused-*`: the hand-built contrib-op graph of `infra/export-onnx/fuse.py` (GroupQueryAttention,
 * fused norms; Llama-family models, CPU execution provider).
 */
export const PRECISIONS = ["fp32", "fp16", "int8", "int4", "fused-fp32", "fused-int8", "fused-int4"] as const;
/** onnxruntime execution providers the decoder session can use. */
export const EXECUTION_PROVIDERS = ["cpu", "cuda"] as const;
/** onnxruntime graph optimisation levels. */
export const GRAPH_OPTIMIZATION_LEVELS = ["disabled", "basic", "extended", "all"] as const;

/** `"0"` = off, anything else = on; unset = on. */
const flagDefaultOn = z
  .string()
  .optional()
  .transform((v) => v !== "0");
/** `"1"` = on, anything else = off; unset = off. */
const flagDefaultOff = z
  .string()
  .optional()
  .transform((v) => v === "1");
/** Exactly `"0"` or `"1"` (anything else is refused). */
const bit = z.enum(["0", "1"]).transform((v) => v === "1");
const port = z.coerce.number().int().min(0).max(65535);
const positiveMs = z.coerce.number().int().positive();

export const NodeEnvSchema = z.object({
  // home, cli
  NEST_HOME: z
    .string()
    .optional()
    .describe(
      "cache folder: Python venv, downloads, exported models, corpus indexes, keys; unset = `~/.cache/nest` (resolved by `nestHome()`)",
    ),
  NEST_API_KEY: z
    .string()
    .optional()
    .describe(
      "`serve` accepts this key and `ask`/`batch` send it; unset: `serve` creates a random key once in `$NEST_HOME/api-key` (mode 0600) and the clients read it there",
    ),

  // serve (stack) and the gpu-worker process
  NEST_POOL_SECRET: z
    .string()
    .min(16, "must be at least 16 characters")
    .optional()
    .describe(
      "HMAC secret the edge signs its pool calls with (≥ 16 characters); `serve`: a fresh random one per start when unset; worker-main: required unless NEST_ALLOW_UNSIGNED=1",
    ),
  NEST_FAQ_TTL_S: z.coerce.number().int().positive().default(86_400).describe("lifetime of a cached FAQ answer, seconds"),
  NEST_WORKER_HOST: z.string().default("127.0.0.1").describe("worker-main: interface the HTTP pool binds (the image sets 0.0.0.0)"),
  NEST_WORKER_PORT: port.default(8788).describe("worker-main: TCP port of the HTTP pool (0 = any free port)"),
  NEST_ALLOW_UNSIGNED: bit.default(false).describe("worker-main: `1` runs an open pool without NEST_POOL_SECRET (tests only); `0` or `1`"),
  NEST_BATCH_CONSUME: bit
    .default(true)
    .describe("worker-main with NEST_REDIS_URL: `1` also decodes batch items in the pool, `0` leaves them to the batch consumers"),
  NEST_MODEL_DIR: z.string().optional().describe("worker-main: model folder; unset = the model `nestlm setup` prepared in $NEST_HOME"),
  NEST_WARMUP: bit.default(true).describe("worker-main: `1` runs one warm-up generation before /readyz turns ready; `0` or `1`"),

  // batch queue
  NEST_REDIS_URL: z
    .string()
    .regex(/^rediss?:\/\//, "must be a redis:// or rediss:// URL")
    .optional()
    .describe(
      "Redis of the batch queue and the FAQ cache; unset: `serve` and the consumers use redis://127.0.0.1:6379, worker-main serves no /v1/batches",
    ),
  NEST_BATCH_PREFIX: z.string().default("nest").describe("prefix of every Redis key of the batch queue (BullMQ's and ours)"),
  NEST_BATCH_LOCK_MS: positiveMs
    .default(30_000)
    .describe("batch consumers: job lock, milliseconds (a dead consumer's item is taken up again within about lock + stalled interval)"),
  NEST_BATCH_STALLED_INTERVAL_MS: positiveMs.default(30_000).describe("batch consumers: period of the stalled-job check, milliseconds"),

  // ops
  NEST_METRICS_PORT: port.optional().describe("consumer-main: TCP port of /healthz, /readyz and /metrics; unset = none"),
  NEST_METRICS_HOST: z.string().default("0.0.0.0").describe("consumer-main: interface of the metrics port"),

  // decoder session (onnxruntime)
  NEST_PRECISION: z
    .enum(PRECISIONS)
    .optional()
    .describe(
      "decoder graph and weights: fp32, int8, int4, fp16, or the fused graph fused-fp32, fused-int8, fused-int4 (prepare with `nestlm setup --precision …`); unset = fused-fp32 on the CPU provider (fp32 where the model has no fused graph), fp32 on cuda",
    ),
  NEST_EXECUTION_PROVIDER: z
    .enum(EXECUTION_PROVIDERS)
    .default("cpu")
    .describe("onnxruntime execution provider: cpu or cuda (needs onnxruntime-node's CUDA provider libraries, docs/cuda.md)"),
  NEST_THREADS: z.coerce.number().int().min(0).max(256).default(0).describe("onnxruntime intra-op threads, 0..256; 0 = one per core"),
  NEST_GRAPH_OPTIMIZATION: z
    .enum(GRAPH_OPTIMIZATION_LEVELS)
    .default("all")
    .describe("onnxruntime graph optimisation level: disabled, basic, extended, all"),
  NEST_CPU_MEM_ARENA: flagDefaultOn.describe(
    "`0` disables onnxruntime's CPU memory arena (faster allocation, keeps peak memory); default on",
  ),
  NEST_INTRA_OP_SPINNING: bit
    .default(true)
    .describe(
      "`0` stops onnxruntime's intra-op threads from busy-waiting for the next op (`session.intra_op.allow_spinning`); `1` (default) lets them, for NEST_INTRA_OP_SPIN_US at most; `0` or `1`",
    ),
  NEST_INTRA_OP_SPIN_US: z
    .string()
    .regex(/^\d+$/, "expected a whole number of µs")
    .transform(Number)
    .pipe(z.number().int().min(0).max(1_000_000))
    .default(50)
    .describe(
      "how long a spinning intra-op thread busy-waits for the next op before it sleeps, µs (`session.intra_op.spin_duration_us`); 0 = no bound (onnxruntime's own spinning, 22-40 % slower than none beside a CPU load)",
    ),

  // passage encoding and its key caches
  NEST_ENCODE_BATCH: z.coerce
    .number()
    .int()
    .min(1)
    .max(256)
    .default(8)
    .describe("most passages per LM encoding pass, 1..256 (1 = one passage per pass)"),
  NEST_ENCODE_PADDING: z.coerce
    .number()
    .min(0)
    .max(100)
    .default(0.25)
    .describe("most padding per encoding pass, as a fraction of its real tokens (at least 64 tokens), 0..100"),
  // Above the longest passage encoded (512 tokens, MAX_PASSAGE_TOKENS in gpu-worker/src/engine/passage-encoder.ts).
  NEST_ENCODE_BATCH_TOKENS: z.coerce
    .number()
    .int()
    .min(513)
    .max(1 << 20)
    .default(4096)
    .describe("most padded tokens (passages × longest) per encoding pass, 513..1048576 tokens"),
  NEST_KEY_CACHE_MB: z.coerce.number().min(0).default(256).describe("bound of the worker's in-memory passage-key LRU, MiB (0 = none)"),
  NEST_KEY_CACHE: flagDefaultOn.describe("`0` keeps encoded passages in memory only (no $NEST_HOME/keys/ files); default on"),
  NEST_CORPUS_KEYS: flagDefaultOn.describe("`0` ignores pre-encoded corpus key files (`nestlm encode`); default on"),

  // corpora
  NEST_FACTBOOK_DENSE: flagDefaultOff.describe("`1`: `setup` also embeds the factbook for hybrid retrieval; default off"),
  NEST_FUSION: z
    .enum(FUSION_METHODS)
    .default(DEFAULT_FUSION)
    .describe("fusion of a hybrid index when a request gives none: rrf, adaptive, bm25 or dense"),
  UPSTASH_VECTOR_REST_URL: z.string().optional().describe("`nestlm ingest --target upstash`: Upstash Vector REST URL"),
  UPSTASH_VECTOR_REST_TOKEN: z.string().optional().describe("`nestlm ingest --target upstash`: Upstash Vector REST token"),
});

/** Every variable, parsed (defaults applied). */
export type NodeVars = z.infer<typeof NodeEnvSchema>;
/** Names of the variables {@link NodeEnvSchema} reads. */
export type NodeVarName = keyof NodeVars;

/** Which variables each stage reads (a variable may serve two stages, e.g. the pool secret). */
export const NODE_ENV_SLICES = {
  /** The cache folder (`nestHome()`). */
  home: ["NEST_HOME"],
  /** The `nestlm` clients (`ask`, `batch`) and `serve`'s static key. */
  cli: ["NEST_API_KEY"],
  /** `nestlm serve`: the edge and its supervised worker in one process tree. */
  stack: ["NEST_POOL_SECRET", "NEST_FAQ_TTL_S"],
  /** The gpu-worker process `worker-main.ts`. */
  worker: [
    "NEST_WORKER_HOST",
    "NEST_WORKER_PORT",
    "NEST_POOL_SECRET",
    "NEST_ALLOW_UNSIGNED",
    "NEST_BATCH_CONSUME",
    "NEST_MODEL_DIR",
    "NEST_WARMUP",
  ],
  /** The batch queue (`gpu-worker/src/batch/config.ts`): producers and consumers. */
  batch: ["NEST_REDIS_URL", "NEST_BATCH_PREFIX", "NEST_BATCH_LOCK_MS", "NEST_BATCH_STALLED_INTERVAL_MS"],
  /** The consumer's probes and `/metrics`. */
  metrics: ["NEST_METRICS_PORT", "NEST_METRICS_HOST"],
  /** The decoder session (`runtimeOptions`). */
  runtime: [
    "NEST_PRECISION",
    "NEST_EXECUTION_PROVIDER",
    "NEST_THREADS",
    "NEST_GRAPH_OPTIMIZATION",
    "NEST_CPU_MEM_ARENA",
    "NEST_INTRA_OP_SPINNING",
    "NEST_INTRA_OP_SPIN_US",
  ],
  /** The passage encoder and its key caches (`encodeBatchOptions`, `defaultCacheBytes`, `Engine.load`). */
  encode: [
    "NEST_ENCODE_BATCH",
    "NEST_ENCODE_PADDING",
    "NEST_ENCODE_BATCH_TOKENS",
    "NEST_KEY_CACHE_MB",
    "NEST_KEY_CACHE",
    "NEST_CORPUS_KEYS",
  ],
  /** Corpus indexes: building the factbook (`prepareCorpus`), opening an index (`openLanceIndex`). */
  corpus: ["NEST_FACTBOOK_DENSE", "NEST_FUSION"],
  /** `nestlm ingest --target upstash`. */
  upstash: ["UPSTASH_VECTOR_REST_URL", "UPSTASH_VECTOR_REST_TOKEN"],
} as const satisfies Record<string, readonly NodeVarName[]>;

export type NodeEnvSliceName = keyof typeof NODE_ENV_SLICES;
/** One stage's variables, parsed and frozen. */
export type NodeEnvSlice<S extends NodeEnvSliceName> = Readonly<Pick<NodeVars, (typeof NODE_ENV_SLICES)[S][number]>>;
/** The parsed environment of a process: one frozen slice per stage. */
export type NodeEnv = { readonly [S in NodeEnvSliceName]: NodeEnvSlice<S> };

export type HomeEnv = NodeEnvSlice<"home">;
export type CliEnv = NodeEnvSlice<"cli">;
export type StackEnv = NodeEnvSlice<"stack">;
export type WorkerEnv = NodeEnvSlice<"worker">;
export type BatchEnv = NodeEnvSlice<"batch">;
export type MetricsEnv = NodeEnvSlice<"metrics">;
export type RuntimeEnv = NodeEnvSlice<"runtime">;
export type EncodeEnv = NodeEnvSlice<"encode">;
export type CorpusEnv = NodeEnvSlice<"corpus">;
export type UpstashEnv = NodeEnvSlice<"upstash">;

/**
 * Parses the environment of a Node process: call it once in the entry point
 * (`nodeEnv(process.env)`) and hand each stage its slice. Only the variables of
 * {@link NodeEnvSchema} are read; an empty string counts as unset (e.g. `NEST_REDIS_URL=` in a
 * manifest). The record and every slice are frozen, and later changes to `env` do not reach them.
 * @param env variable name → value (`process.env`, or a literal record in tests)
 * @returns one slice per stage ({@link NODE_ENV_SLICES}), defaults applied
 * @throws RangeError naming every malformed variable, e.g.
 *   `environment variable NEST_THREADS: Invalid input: expected number, received NaN`
 */
export function nodeEnv(env: Readonly<Record<string, string | undefined>>): NodeEnv {
  const set: Record<string, string> = {};
  for (const name of Object.keys(NodeEnvSchema.shape)) {
    const v = env[name];
    if (v !== undefined && v !== "") set[name] = v;
  }
  const r = NodeEnvSchema.safeParse(set);
  if (!r.success) {
    throw new RangeError(r.error.issues.map((i) => `environment variable ${i.path.join(".")}: ${i.message}`).join("; "));
  }
  const vars: Readonly<Record<string, unknown>> = r.data;
  const slices = Object.entries(NODE_ENV_SLICES).map(([slice, names]) => [
    slice,
    Object.freeze(Object.fromEntries(names.map((n) => [n, vars[n]]))),
  ]);
  return Object.freeze(Object.fromEntries(slices)) as NodeEnv;
}

/** The defaults alone (an empty environment): what a library stage uses when it is handed no slice. */
export const DEFAULT_NODE_ENV: NodeEnv = nodeEnv({});
