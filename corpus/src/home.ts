/**
 * @module home
 * The cache folder `$NEST_HOME` (default `~/.cache/nest`) and where prepared artefacts live in it:
 * `venv/` (Python exporters), `downloads/`, `models/` (exported LM and embedder), `corpora/`
 * (corpus indexes, see `layout`), `api-key`. Node-only. Every package that reads or writes the cache
 * folder takes its paths from here.
 */
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** Repository root (two levels above `corpus/src`). */
export const REPO_ROOT = resolve(fileURLToPath(new URL("../..", import.meta.url)));

/**
 * The cache folder for models, corpora indexes, the Python virtualenv and local secrets: `NEST_HOME`
 * (declared in `@nest/shared/config/node-env`; empty = unset), else `~/.cache/nest`.
 * @param env the `home` slice of `nodeEnv(process.env)` from an entry point; default `process.env`
 *   (every cache path defaults to this folder, so library code may call it without a slice)
 */
export function nestHome(env: { readonly NEST_HOME?: string } = process.env): string {
  return resolve(env.NEST_HOME || join(homedir(), ".cache", "nest"));
}

/** Paths inside the cache folder. */
export function cachePaths(home = nestHome()) {
  return {
    home,
    venv: join(home, "venv"),
    downloads: join(home, "downloads"),
    models: join(home, "models"),
    corpora: join(home, "corpora"),
    apiKeyFile: join(home, "api-key"),
  };
}
