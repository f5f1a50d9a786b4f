/**
 * The edge's tests inside workerd (issue 5 §7): `@cloudflare/vitest-pool-workers` runs
 * `test/workerd/*.test.ts` in the Workers runtime with the Worker of `wrangler.toml`
 * (`edge/src/adapters/workers.ts`) and its bindings (KV `NEST_KEYS`/`NEST_CACHE`, the rate limiter,
 * the vars) simulated locally by Miniflare. The global setup starts the real gpu-worker on Node;
 * the Worker's `NEST_POOL_URL` points at it. Needs `nestlm setup` (model, corpus) first.
 * Run: `npx vitest run --config test/workerd/vitest.config.ts`.
 */
import { fileURLToPath } from "node:url";
import { cloudflareTest } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";

const root = fileURLToPath(new URL("../..", import.meta.url));

/** SHA-256 of `workerd-static-key`, the full-access key the tests send (plays the secret `NEST_API_KEY_HASHES`). */
const STATIC_HASH = "097c4e1c0bebfc94c7238a24ef1c3a415cefd3bb9404b22d6ddd8cbfce59e7e0";

export default defineConfig({
  root,
  plugins: [
    cloudflareTest(({ inject }) => ({
      wrangler: { configPath: `${root}/wrangler.toml` },
      miniflare: {
        // Secrets are not in wrangler.toml and the pool is the one the global setup started.
        bindings: {
          NEST_API_KEY_HASHES: STATIC_HASH,
          NEST_POOL_SECRET: inject("poolSecret"),
          NEST_POOL_URL: inject("poolUrl"),
          NEST_CORPUS_VERSIONS: inject("corpusVersions"),
        },
      },
    })),
  ],
  test: {
    include: ["test/workerd/**/*.test.ts"],
    globalSetup: ["test/workerd/pool-setup.ts"],
    testTimeout: 120_000,
    // The Worker logs one line per request (`POST /v1/generate 200 3.0ms`): keep the output readable.
    onConsoleLog: (log) => !/^(GET|POST) \/\S* \d{3} [\d.]+ms\s*$/.test(log),
    hookTimeout: 300_000,
  },
});
