/**
 * @module runtime/session-options
 * How the decoder runs: precision, execution provider and onnxruntime session options. The
 * environment's part is the `runtime` slice of `@nest/shared/config/node-env` (`NEST_PRECISION`,
 * `NEST_EXECUTION_PROVIDER`, `NEST_THREADS`, `NEST_GRAPH_OPTIMIZATION`, `NEST_CPU_MEM_ARENA`,
 * `NEST_INTRA_OP_SPINNING`, `NEST_INTRA_OP_SPIN_US`), parsed once by the process entry point; explicit options override it.
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
  /**
   * Weights and graph of the decoder; variants are made by `nestlm setup --precision P`. Unset:
   * {@link defaultPrecision}.
   */
  precision: z.enum(PRECISIONS).optional(),
  /** `cuda` needs onnxruntime-node's CUDA provider libraries (docs/cuda.md). */
  executionProvider: z.enum(EXECUTION_PROVIDERS).default("cpu"),
  /** onnxruntime intra-op threads; 0 lets onnxruntime use one per core. */
  threads: z.number().int().min(0).max(256).default(0),
  graphOptimizationLevel: z.enum(GRAPH_OPTIMIZATION_LEVELS).default("all"),
  /** onnxruntime's CPU memory arena (faster allocation, keeps peak memory). */
  enableCpuMemArena: z.boolean().default(true),
  /**
   * Whether onnxruntime's intra-op threads busy-wait for the next op instead of sleeping at once
   * (`session.intra_op.allow_spinning`), for {@link RuntimeOptions.intraOpSpinDurationUs} at most.
   */
  intraOpSpinning: z.boolean().default(true),
  /**
   * The bound of that busy-wait, µs (`session.intra_op.spin_duration_us`); 0 = no time bound
   * (onnxruntime's own spin loop, called "unbounded" in the benches). Default 50: a decoding step's ops follow each other closely, so a
   * short spin keeps spinning's gain on a quiet machine (fused graphs +20-30 % over no spinning),
   * while a thread that finds no work soon gives a shared core back (beside a CPU load fused-fp32
   * +5 %, the other graphs -13 to -30 %, unbounded spinning -22 to -40 %;
   * test/bench/runtime.bench.ts, README "Speed and benchmarks").
   */
  intraOpSpinDurationUs: z.number().int().min(0).max(1_000_000).default(50),
});
export type RuntimeOptions = z.infer<typeof RuntimeOptionsSchema>;
/** {@link RuntimeOptions} with the precision decided ({@link defaultPrecision} when it was unset). */
export type ResolvedRuntimeOptions = RuntimeOptions & { precision: Precision };

/**
 * The weights a precision runs, as model names and key-cache folders name them: `fused-fp32` is the
 * fp32 weights in the fused graph, so it shares fp32's name, its passage-key caches and its
 * encoded-corpus stores (hidden states within 6.7e-7 relative, far below the fp16 store's rounding;
 * identical nest answers and citations, `test/unit/gpu-worker/runtime/fused-graph.test.ts`). Every
 * other precision is its own weights.
 */
export function weightsName(precision: Precision): Exclude<Precision, "fused-fp32"> {
  return precision === "fused-fp32" ? "fp32" : precision;
}

/**
 * The precision when none is asked for: the fused float32 graph (`fused-fp32`, infra/export-onnx/fuse.py)
 * on the CPU provider when the model has it (`prepareModel` builds it for Llama-family models), else
 * the traced fp32 graph (CUDA: GroupQueryAttention there takes float16 only; GPT-2: no fused
 * builder). Both run the same float32 weights: 20/20 identical greedy outputs; the fused graph
 * decodes 1.2-1.7× as fast, with prefill about the same (README "Speed and benchmarks").
 * @param prepared whether a variant is prepared (the manifest's `precisions`)
 */
export function defaultPrecision(executionProvider: RuntimeOptions["executionProvider"], prepared: (p: Precision) => boolean): Precision {
  return executionProvider === "cpu" && prepared("fused-fp32") ? "fused-fp32" : "fp32";
}

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
    intraOpSpinDurationUs: env.NEST_INTRA_OP_SPIN_US,
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
      intraOpSpinDurationUs: "NEST_INTRA_OP_SPIN_US",
    };
    const field = String(issue.path[0] ?? "");
    throw new NestError("invalid_request", `${names[field] ?? field}: ${issue.message}`);
  }
  return parsed.data;
}

/**
 * The `session.intra_op.*` config entries of `options` (onnxruntime_session_options_config_keys.h),
 * nested as onnxruntime-node's `extra` option flattens them.
 * @returns string values: `allow_spinning` ("0" | "1"), and `spin_duration_us` (µs) when spinning
 *   has a bound
 */
export function intraOpConfig(options: Pick<RuntimeOptions, "intraOpSpinning" | "intraOpSpinDurationUs">): Record<string, string> {
  if (!options.intraOpSpinning) return { allow_spinning: "0" };
  return options.intraOpSpinDurationUs > 0
    ? { allow_spinning: "1", spin_duration_us: String(options.intraOpSpinDurationUs) }
    : { allow_spinning: "1" };
}
