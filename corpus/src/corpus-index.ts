/**
 * @module corpus-index
 * Builds a local corpus index (LanceDB: BM25 + dense vectors, see `lancedb-index`) at
 * `$NEST_HOME/corpora/<name>/<version12>/`, resumably. Used by `nestlm setup` (factbook) and
 * `nestlm ingest --target local`. Node-only.
 *
 * Index version = sha256 of `INDEX_FORMAT`, the embedder cache key and the content version (sha256
 * over every passage's id and text, see `layout.contentVersion`), so a new embedder or index format rebuilds
 * old caches by itself, and unchanged content is a no-op.
 *
 * Resume: passage vectors are appended, a whole batch at a time, to
 * `<name>/<version12>.embed/vectors.f32` (float32, `[passages, dim]`, passage order). A restarted
 * build keeps the whole rows already there and embeds the rest. The folder is removed once the
 * index is complete. The index itself is built in a temporary sibling and renamed into place;
 * `READY.json` is written last and `current.json` (`{ version, dir }`) points at the newest (both
 * through `layout`).
 */
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { appendFile, mkdir, open, readFile, rename, rm, stat, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Passage } from "@nest/shared/protocol/passage";
import { NestError } from "@nest/shared/protocol/errors";
import { buildLanceIndex, embedAll, embeddingText } from "./lancedb-index.ts";
import { SentenceEmbedder } from "./embedder.ts";
import { type CorpusReady, contentVersion, corpusRoot, readReady, writeCurrent, writeReady } from "./layout.ts";

/** Bump when the on-disk index layout changes (2 = dense vectors added). */
export const INDEX_FORMAT = 2;

/** Embedder key recorded for an index built without dense vectors. */
export const BM25_ONLY = "bm25-only";

/** Progress callbacks of a build. */
export interface BuildProgress {
  start(total: number, done: number): void;
  update(done: number): void;
  stop(): void;
}

/** Options for {@link buildCorpusIndex}. */
export interface BuildCorpusOptions {
  home?: string;
  log?: (line: string) => void;
  /** Prepared embedder folder and cache key (`prepareEmbedder`); null builds a BM25-only index. */
  embedder: { dir: string; key: string } | null;
  /** Extra fields for READY.json (e.g. `package`, `maxWords`, `source`). */
  meta?: Record<string, unknown>;
  progress?: BuildProgress;
  /** Passages embedded per checkpointed batch. @defaultValue 256 */
  batchSize?: number;
  /** Test hook: called after each checkpointed batch with passages embedded so far; throw to simulate a crash. */
  afterBatch?: (done: number) => void;
  /** onnxruntime threads for embedding. @defaultValue 2 */
  threads?: number;
}

/** Index version for a content version and embedder key (see module doc). */
export function indexVersion(content: string, embedderKey: string): string {
  return createHash("sha256").update(`nest-index-${INDEX_FORMAT}\n${embedderKey}\n${content}`).digest("hex");
}

/**
 * Builds (or finds) the index of `passages` for corpus `name`.
 *
 * @returns the index folder, version, passage count, and whether anything was built
 * @throws NestError `invalid_request` on no passages or duplicate ids; embedder / LanceDB errors as is
 */
export async function buildCorpusIndex(
  name: string,
  passages: readonly Passage[],
  opts: BuildCorpusOptions,
): Promise<{ dir: string; version: string; contentVersion: string; passages: number; built: boolean }> {
  const log = opts.log ?? ((s: string) => process.stderr.write(`${s}\n`));
  if (passages.length === 0) throw new NestError("invalid_request", `corpus "${name}" has no passages`);
  const seen = new Set<string>();
  for (const p of passages) {
    if (seen.has(p.id)) throw new NestError("invalid_request", `corpus "${name}": duplicate passage id ${p.id}`);
    seen.add(p.id);
  }
  const content = contentVersion(passages);
  const embedderKey = opts.embedder?.key ?? BM25_ONLY;
  const version = indexVersion(content, embedderKey);
  const root = corpusRoot(name, opts.home);
  const dir = join(root, version.slice(0, 12));
  const pointer = () => writeCurrent(name, { version, dir }, opts.home);
  const ready = await readReady(dir);
  if (ready?.version === version) {
    await pointer();
    return { dir, version, contentVersion: content, passages: ready.passages, built: false };
  }
  await mkdir(root, { recursive: true });
  const work = join(root, `${version.slice(0, 12)}.embed`);
  const release = await takeLock(work);
  try {
    return await build();
  } finally {
    await release();
  }

  async function build() {
    const t0 = performance.now();
    const embedderInfo = opts.embedder;
    const embedder = embedderInfo ? await SentenceEmbedder.load(embedderInfo.dir, opts.threads ?? 2) : undefined;
    try {
      const vectors = embedder ? await embedResumable(work, passages, embedder, opts) : undefined;
      const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
      log(`${name}: writing the index (${embedder ? "BM25 + vectors" : "BM25 only"}) into ${dir}`);
      try {
        await buildLanceIndex(
          tmp,
          passages,
          embedder && vectors && embedderInfo ? { vectors: { dim: embedder.dim, get: (row) => vectors[row]! }, embedderInfo } : {},
        );
        const info: CorpusReady = {
          corpus: name,
          version,
          contentVersion: content,
          embedderKey,
          indexFormat: INDEX_FORMAT,
          passages: passages.length,
          createdAt: new Date().toISOString(),
          buildSeconds: Math.round((performance.now() - t0) / 100) / 10,
          ...opts.meta,
        };
        await writeReady(tmp, info);
        await rm(dir, { recursive: true, force: true });
        await rename(tmp, dir);
      } finally {
        await rm(tmp, { recursive: true, force: true });
      }
    } finally {
      await embedder?.close();
    }
    await rm(join(work, "vectors.f32"), { force: true });
    await pointer();
    return { dir, version, contentVersion: content, passages: passages.length, built: true };
  }
}

/** Thrown by {@link buildCorpusIndex} when another live process is building the same index. */
export class BuildBusyError extends NestError {
  constructor(
    readonly pid: number,
    work: string,
  ) {
    super("at_capacity", `another process (pid ${pid}) is building this index (${work}); try again when it is done`);
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Takes `<work>/LOCK` (pid inside); a lock of a dead process is taken over. @throws BuildBusyError when a live process holds it */
async function takeLock(work: string): Promise<() => Promise<void>> {
  await mkdir(work, { recursive: true });
  const lock = join(work, "LOCK");
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await writeFile(lock, String(process.pid), { flag: "wx" });
      return async () => {
        await rm(lock, { force: true });
        if (!existsSync(join(work, "vectors.f32"))) await rm(work, { recursive: true, force: true });
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      const pid = Number(await readFile(lock, "utf8").catch(() => "0"));
      if (pid && pid !== process.pid && isAlive(pid)) throw new BuildBusyError(pid, work);
      await rm(lock, { force: true });
    }
  }
  throw new BuildBusyError(0, work);
}

/** Embeds `passages` with a checkpoint file in `work` (see module doc); returns every vector in order. */
async function embedResumable(
  work: string,
  passages: readonly Passage[],
  embedder: SentenceEmbedder,
  opts: BuildCorpusOptions,
): Promise<Float32Array[]> {
  const dim = embedder.dim;
  const rowBytes = dim * 4;
  const file = join(work, "vectors.f32");
  await mkdir(work, { recursive: true });
  let done = 0;
  if (existsSync(file)) {
    const size = (await stat(file)).size;
    done = Math.min(Math.floor(size / rowBytes), passages.length);
    if (size !== done * rowBytes) await truncate(file, done * rowBytes); // drop a torn row
  }
  const batch = opts.batchSize ?? 256;
  opts.progress?.start(passages.length, done);
  try {
    while (done < passages.length) {
      const slice = passages.slice(done, done + batch);
      const vecs = await embedAll(embedder, slice.map(embeddingText));
      const buf = Buffer.alloc(slice.length * rowBytes);
      vecs.forEach((v, i) => buf.set(new Uint8Array(v.buffer, v.byteOffset, rowBytes), i * rowBytes));
      await appendFile(file, buf);
      done += slice.length;
      opts.progress?.update(done);
      opts.afterBatch?.(done);
    }
  } finally {
    opts.progress?.stop();
  }
  const fh = await open(file, "r");
  try {
    const all = Buffer.alloc(passages.length * rowBytes);
    await fh.read(all, 0, all.length, 0);
    const f = new Float32Array(all.buffer, all.byteOffset, passages.length * dim);
    return passages.map((_, i) => f.slice(i * dim, (i + 1) * dim));
  } finally {
    await fh.close();
  }
}
