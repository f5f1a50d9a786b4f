/**
 * @module runtime/session-options
 * How the decoder runs: precision, execution provider and onnxruntime session options. Parsed once
 * from the environment (`NEST_PRECISION`, `NEST_EXECUTION_PROVIDER`, `NEST_THREADS`,
 * `NEST_GRAPH_OPTIMIZATION`, `NEST_CPU_MEM_ARENA`, `NEST_INTRA_OP_SPINNING`); explicit options
 * override the environment.
 */
import { z } from "zod";
import { NestError } from "@nest/shared/protocol/errors";

export const PRECISIONS = ["fp32", "fp16", "int8", "int4"] as const;
export type Precision = (typeof PRECISIONS)[number];

export const RuntimeOptionsSchema = z.object({
  /** Weights of the decoder; non-fp32 variants are made by `nestlm setup --precision P`. */
  precision: z.enum(PRECISIONS).default("fp32"),
  /** `cuda` needs onnxruntime-node's CUDA provider libraries (docs/cuda.md). */
  executionProvider: z.enum(["cpu", "cuda"]).default("cpu"),
  /** onnxruntime intra-op threads; 0 lets onnxruntime use one per core. */
  threads: z.number().int().min(0).max(256).default(0),
  graphOptimizationLevel: z.enum(["disabled", "basic", "extended", "all"]).default("all"),
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
 * Runtime options from the environment, with `overrides` on top.
 * @throws NestError `invalid_request` naming the variable when a value is not valid.
 */
export function runtimeOptions(overrides: Partial<RuntimeOptions> = {}, env: NodeJS.ProcessEnv = process.env): RuntimeOptions {
  const raw: Record<string, unknown> = {};
  if (env.NEST_PRECISION) raw.precision = env.NEST_PRECISION;
  if (env.NEST_EXECUTION_PROVIDER) raw.executionProvider = env.NEST_EXECUTION_PROVIDER;
  if (env.NEST_THREADS) raw.threads = Number(env.NEST_THREADS);
  if (env.NEST_GRAPH_OPTIMIZATION) raw.graphOptimizationLevel = env.NEST_GRAPH_OPTIMIZATION;
  if (env.NEST_CPU_MEM_ARENA) raw.enableCpuMemArena = env.NEST_CPU_MEM_ARENA !== "0";
  if (env.NEST_INTRA_OP_SPINNING) raw.intraOpSpinning = env.NEST_INTRA_OP_SPINNING !== "0";
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
