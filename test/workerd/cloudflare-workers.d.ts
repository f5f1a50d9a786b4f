/**
 * The parts of the `cloudflare:workers` module the workerd tests use (the full typings,
 * `@cloudflare/workers-types`, clash with `@types/node` in the repo's one tsconfig).
 */
declare module "cloudflare:workers" {
  type KvNamespaceLike = import("../../edge/src/adapters/workers-kv.ts").KvNamespaceLike;
  /** The bindings of `wrangler.toml` plus those `test/workerd/vitest.config.ts` adds. */
  export const env: {
    NEST_KEYS: KvNamespaceLike;
    NEST_CACHE: KvNamespaceLike;
    NEST_POOL_URL: string;
    NEST_POOL_SECRET: string;
    NEST_CORPUS_VERSIONS: string;
  };
  /** The Worker's exports (`edge/src/adapters/workers.ts`), called in the same isolate. */
  export const exports: {
    default: { fetch(input: string | Request, init?: RequestInit): Promise<Response> };
  };
}
