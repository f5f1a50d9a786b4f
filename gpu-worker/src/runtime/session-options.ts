/**
 * @module runtime/session-options
 * How the decoder runs: precision, execution provider and onnxruntime session options. The
 * environment's part is the `runtime` slice of `@nest/shared/config/node-env` (`NEST_PRECISION`,
 * `NEST_EXECUTION_PROVIDER`, `NEST_THREADS`, `NEST_GRAPH_OPTIMIZATION`, `NEST_CPU_MEM_ARENA`,
 * `NEST_INTRA_OP_SPINNING`), parsed once by the process entry point; explicit options override it.
 */
import { z } from "zod";
import { NestError } from "@nest/shared/protocol/errors";
import {
  DEFAULT_NODE_ENV,
  EXECUTION_PROVIDERS,
  GRAPH_OPTIMIZATION_LEVELS,
  PRECISIONS,
  type RuntimeEnv,
} from "@nest/shared/config/node-env";

export { PRECISIONS };
export type Precision = (typeof PRECISIONS)[number];

export const RuntimeOptionsSchema = z.object({
  /** Weights of the decoder; non-fp32 variants are made by `nestlm setup --precision P`. */
  precision: z.enum(PRECISIONS).default("fp32"),
  /** `cuda` needs onnxruntime-node's CUDA provider libraries (docs/cuda.md). */
  executionProvider: z.enum(EXECUTION_PROVIDERS).default("cpu"),
  /** onnxruntime intra-op threads; 0 lets onnxruntime use one per core. */
  threads: z.number().int().min(0).max(256).default(0),
  graphOptimizationLevel: z.enum(GRAPH_OPTIMIZATION_LEVELS).default("all"),
  /** onnxruntime's CPU memory arena (faster allocation, keeps peak memory). */
  enableCpuMemArena: z.boolean().default(true),
  /**
   * Whether onnxruntime's intra-op threads busy-wait for work between ops and passes
   * (`session.intra_op.allow_spinning`). Off by default: on a CPU shared with other processes a
   * spinning pool burns the cores its peers need, and decoding collapsed under load with it on
   * (test/bench/runtime.bench.ts measures both).
   */
  intraOpSpinning: z.boolean().default(false),
});
export type RuntimeOptions = z.infer<typeof RuntimeOptionsSchema>;

/**
 * Runtime options: the environment's `runtime` slice, with `overrides` on top.
 * @param env the `runtime` slice of `nodeEnv(process.env)`; default: the schema's defaults (no
 *   environment is read here)
 * @throws NestError `invalid_request` naming the variable of the option when an override is not valid
 *   (the slice was checked when the environment was parsed).
 */
export function runtimeOptions(overrides: Partial<RuntimeOptions> = {}, env: RuntimeEnv = DEFAULT_NODE_ENV.runtime): RuntimeOptions {
  const raw: Record<string, unknown> = {
    precision: env.NEST_PRECISION,
    executionProvider: env.NEST_EXECUTION_PROVIDER,
    threads: env.NEST_THREADS,
    graphOptimizationLevel: env.NEST_GRAPH_OPTIMIZATION,
    enableCpuMemArena: env.NEST_CPU_MEM_ARENA,
    intraOpSpinning: env.NEST_INTRA_OP_SPINNING,
  };
  for (const [k, v] of Object.entries(overrides)) if (v !== undefined) raw[k] = v;
  const parsed = RuntimeOptionsSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const names: Record<string, string> = {
      precision: "NEST_PRECISION",
      executionProvider: "NEST_EXECUTION_PROVIDER",
      threads: "NEST_THREADS",
      graphOptimizationLevel: "NEST_GRAPH_OPTIMIZATION",
    };
    const field = String(issue.path[0] ?? "");
    throw new NestError("invalid_request", `${names[field] ?? field}: ${issue.message}`);
  }
  return parsed.data;
}
