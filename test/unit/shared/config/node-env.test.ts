import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { DEFAULT_NODE_ENV, NODE_ENV_SLICES, NodeEnvSchema, nodeEnv } from "@nest/shared/config/node-env";
import { RuntimeOptionsSchema, runtimeOptions } from "@nest/gpu-worker/runtime/session-options";
import { EncodeBatchOptionsSchema, defaultCacheBytes, encodeBatchOptions } from "@nest/gpu-worker/engine/passage-encoder";
import { batchConfigFromEnv, consumerTimingFromEnv } from "@nest/gpu-worker/batch/config";
import { poolSecret } from "@nest/gpu-worker/worker-main";
import { REPO_ROOT } from "@nest/corpus/home";

describe("nodeEnv", () => {
  it("applies the documented defaults, slice by slice", () => {
    expect(nodeEnv({})).toEqual({
      home: { NEST_HOME: undefined },
      cli: { NEST_API_KEY: undefined },
      stack: { NEST_POOL_SECRET: undefined, NEST_FAQ_TTL_S: 86_400 },
      worker: {
        NEST_WORKER_HOST: "127.0.0.1",
        NEST_WORKER_PORT: 8788,
        NEST_POOL_SECRET: undefined,
        NEST_ALLOW_UNSIGNED: false,
        NEST_BATCH_CONSUME: true,
        NEST_MODEL_DIR: undefined,
        NEST_WARMUP: true,
      },
      batch: { NEST_REDIS_URL: undefined, NEST_BATCH_PREFIX: "nest", NEST_BATCH_LOCK_MS: 30_000, NEST_BATCH_STALLED_INTERVAL_MS: 30_000 },
      metrics: { NEST_METRICS_PORT: undefined, NEST_METRICS_HOST: "0.0.0.0" },
      runtime: {
        NEST_PRECISION: undefined,
        NEST_EXECUTION_PROVIDER: "cpu",
        NEST_THREADS: 0,
        NEST_GRAPH_OPTIMIZATION: "all",
        NEST_CPU_MEM_ARENA: true,
        NEST_INTRA_OP_SPINNING: true,
        NEST_INTRA_OP_SPIN_US: 50,
      },
      encode: {
        NEST_ENCODE_BATCH: 8,
        NEST_ENCODE_PADDING: 0.25,
        NEST_ENCODE_BATCH_TOKENS: 4096,
        NEST_KEY_CACHE_MB: 256,
        NEST_KEY_CACHE: true,
        NEST_CORPUS_KEYS: true,
      },
      corpus: { NEST_FACTBOOK_DENSE: false, NEST_FUSION: "rrf" },
      upstash: { UPSTASH_VECTOR_REST_URL: undefined, UPSTASH_VECTOR_REST_TOKEN: undefined },
    });
    expect(DEFAULT_NODE_ENV).toEqual(nodeEnv({}));
  });

  it("reads flags as the README says: `0` turns a default-on flag off, `1` a default-off flag on", () => {
    const env = nodeEnv({
      NEST_KEY_CACHE: "0",
      NEST_CORPUS_KEYS: "1",
      NEST_FACTBOOK_DENSE: "1",
      NEST_FUSION: "adaptive",
      NEST_INTRA_OP_SPINNING: "1",
    });
    expect(env.encode).toMatchObject({ NEST_KEY_CACHE: false, NEST_CORPUS_KEYS: true });
    expect(env.corpus).toEqual({ NEST_FACTBOOK_DENSE: true, NEST_FUSION: "adaptive" });
    expect(env.runtime.NEST_INTRA_OP_SPINNING).toBe(true);
    expect(nodeEnv({ NEST_FACTBOOK_DENSE: "yes" }).corpus.NEST_FACTBOOK_DENSE).toBe(false);
    expect(nodeEnv({ NEST_WARMUP: "0", NEST_BATCH_CONSUME: "0", NEST_ALLOW_UNSIGNED: "1" }).worker).toMatchObject({
      NEST_WARMUP: false,
      NEST_BATCH_CONSUME: false,
      NEST_ALLOW_UNSIGNED: true,
    });
  });

  it("parses numbers with their units", () => {
    const env = nodeEnv({
      NEST_THREADS: "2",
      NEST_KEY_CACHE_MB: "0.5",
      NEST_FAQ_TTL_S: "60",
      NEST_BATCH_LOCK_MS: "1500",
      NEST_METRICS_PORT: "9464",
      NEST_ENCODE_PADDING: "1",
    });
    expect(env.runtime.NEST_THREADS).toBe(2);
    expect(env.encode).toMatchObject({ NEST_KEY_CACHE_MB: 0.5, NEST_ENCODE_PADDING: 1 });
    expect(env.stack.NEST_FAQ_TTL_S).toBe(60);
    expect(env.batch.NEST_BATCH_LOCK_MS).toBe(1500);
    expect(env.metrics.NEST_METRICS_PORT).toBe(9464);
  });

  it("counts an empty string as unset", () => {
    const env = nodeEnv({
      NEST_REDIS_URL: "",
      NEST_THREADS: "",
      NEST_FUSION: "",
      NEST_POOL_SECRET: "",
      NEST_WORKER_HOST: "",
      NEST_HOME: "",
      NEST_KEY_CACHE_MB: "",
    });
    expect(env).toEqual(nodeEnv({}));
  });

  it("throws at parse time naming a malformed variable", () => {
    expect(() => nodeEnv({ NEST_THREADS: "abc" })).toThrow(/^environment variable NEST_THREADS: /);
    expect(() => nodeEnv({ NEST_KEY_CACHE_MB: "-1" })).toThrow(/^environment variable NEST_KEY_CACHE_MB: /);
    expect(() => nodeEnv({ NEST_FUSION: "dbsf" })).toThrow(/NEST_FUSION/);
    expect(() => nodeEnv({ NEST_PRECISION: "int3" })).toThrow(/NEST_PRECISION/);
    expect(() => nodeEnv({ NEST_ENCODE_BATCH_TOKENS: "512" })).toThrow(/NEST_ENCODE_BATCH_TOKENS/);
    expect(() => nodeEnv({ NEST_REDIS_URL: "http://127.0.0.1:6379" })).toThrow(
      "environment variable NEST_REDIS_URL: must be a redis:// or rediss:// URL",
    );
    expect(() => nodeEnv({ NEST_POOL_SECRET: "short" })).toThrow("environment variable NEST_POOL_SECRET: must be at least 16 characters");
    expect(() => nodeEnv({ NEST_WARMUP: "yes" })).toThrow(/NEST_WARMUP/);
    expect(() => nodeEnv({ NEST_WORKER_PORT: "65536" })).toThrow(/NEST_WORKER_PORT/);
    expect(() => nodeEnv({ NEST_BATCH_LOCK_MS: "0" })).toThrow(/NEST_BATCH_LOCK_MS/);
    // every malformed variable, in one message
    expect(() => nodeEnv({ NEST_THREADS: "abc", NEST_KEY_CACHE_MB: "-1" })).toThrow(
      /NEST_THREADS: .*; environment variable NEST_KEY_CACHE_MB: /,
    );
  });

  it("freezes the record and every slice; later changes to the environment do not reach them", () => {
    const raw: Record<string, string> = { NEST_FUSION: "bm25" };
    const env = nodeEnv(raw);
    raw.NEST_FUSION = "dense";
    expect(env.corpus.NEST_FUSION).toBe("bm25");
    expect(Object.isFrozen(env)).toBe(true);
    for (const slice of Object.values(env)) expect(Object.isFrozen(slice)).toBe(true);
    expect(() => {
      (env.corpus as { NEST_FUSION: string }).NEST_FUSION = "dense";
    }).toThrow(TypeError);
  });

  it("ignores variables it does not declare", () => {
    expect(nodeEnv({ PATH: "/usr/bin", NEST_E2E_ROOT: "/tmp" })).toEqual(nodeEnv({}));
  });

  it("puts every variable in a slice and describes each", () => {
    const declared = Object.keys(NodeEnvSchema.shape).sort();
    expect([...new Set(Object.values(NODE_ENV_SLICES).flat())].sort()).toEqual(declared);
    for (const [name, schema] of Object.entries(NodeEnvSchema.shape)) expect(schema.description, name).toMatch(/\S{3}/);
  });

  it("lists every variable in the README's configuration table", () => {
    const readme = readFileSync(`${REPO_ROOT}/README.md`, "utf8");
    const section = readme.slice(readme.indexOf("\n## Configuration"), readme.indexOf("**On Workers**"));
    const missing = Object.keys(NodeEnvSchema.shape).filter((name) => !section.includes(`\`${name}\``));
    expect(missing).toEqual([]);
  });
});

describe("the stages' slices", () => {
  it("runtime: the slice gives the session options, explicit options win", () => {
    expect(runtimeOptions({}, nodeEnv({ NEST_PRECISION: "int4", NEST_GRAPH_OPTIMIZATION: "basic" }).runtime)).toEqual({
      precision: "int4",
      executionProvider: "cpu",
      threads: 0,
      graphOptimizationLevel: "basic",
      enableCpuMemArena: true,
      intraOpSpinning: true,
      intraOpSpinDurationUs: 50,
    });
    // the schema's defaults are the options' defaults
    expect(runtimeOptions({}, DEFAULT_NODE_ENV.runtime)).toEqual(RuntimeOptionsSchema.parse({}));
  });

  it("encode: batching and the key LRU's bound in bytes", () => {
    const env = nodeEnv({ NEST_ENCODE_BATCH: "3", NEST_ENCODE_BATCH_TOKENS: "600", NEST_KEY_CACHE_MB: "1.5" }).encode;
    expect(encodeBatchOptions({}, env)).toEqual({ maxBatchPassages: 3, maxBatchTokens: 600, maxPaddingRatio: 0.25 });
    expect(encodeBatchOptions({ maxBatchPassages: 1 }, env).maxBatchPassages).toBe(1);
    expect(defaultCacheBytes(env)).toBe(1_572_864); // 1.5 × 1024 × 1024
    expect(defaultCacheBytes(nodeEnv({ NEST_KEY_CACHE_MB: "0" }).encode)).toBe(0);
    expect(defaultCacheBytes()).toBe(268_435_456); // 256 MiB
    expect(encodeBatchOptions({}, DEFAULT_NODE_ENV.encode)).toEqual(EncodeBatchOptionsSchema.parse({}));
  });

  it("batch: queue address, prefix and consumer timing", () => {
    expect(batchConfigFromEnv(nodeEnv({}).batch)).toEqual({ redisUrl: "redis://127.0.0.1:6379", prefix: "nest" });
    const env = nodeEnv({ NEST_REDIS_URL: "rediss://r:6380/2", NEST_BATCH_PREFIX: "p", NEST_BATCH_STALLED_INTERVAL_MS: "500" }).batch;
    expect(batchConfigFromEnv(env)).toEqual({ redisUrl: "rediss://r:6380/2", prefix: "p" });
    expect(consumerTimingFromEnv(env)).toEqual({ lockMs: 30_000, stalledIntervalMs: 500 });
  });

  it("worker: the pool secret is required unless the pool is explicitly open", () => {
    expect(() => poolSecret(nodeEnv({}).worker)).toThrow(/NEST_POOL_SECRET is required/);
    expect(poolSecret(nodeEnv({ NEST_ALLOW_UNSIGNED: "1" }).worker)).toBeUndefined();
    expect(poolSecret(nodeEnv({ NEST_POOL_SECRET: "0123456789abcdef" }).worker)).toBe("0123456789abcdef");
  });
});
