/**
 * @module encode
 * `nestlm encode [--corpus factbook] [--limit N]`: runs a corpus's passages through the LM once and
 * stores their token keys in the disk tier of the passage-key cache (`$NEST_HOME/keys/`), so later
 * requests over those passages need no LM encoding (design: "pre-encode a whole corpus at ingest
 * time"). Resumable: passages already on disk are skipped.
 */
import type { Command } from "commander";
import { InvalidArgumentError } from "commander";
import { readIndexPassages } from "@nest/corpus/lancedb-index";
import type { Passage } from "@nest/shared/protocol/passage";
import { Engine } from "@nest/gpu-worker/engine/engine";
import { findModelDir } from "@nest/gpu-worker/runtime/prepare-model";
import { findCorpusDir } from "@nest/corpus/layout";
import { progressReporter } from "@nest/corpus/progress";

/** Every passage of a prepared corpus, in table order (`limit` first ones when given). */
export async function corpusPassages(corpus: string, limit?: number): Promise<Passage[]> {
  return readIndexPassages(await findCorpusDir(corpus), limit);
}

/**
 * Encodes the passages of `corpus` into the disk key cache.
 * @returns how many passages the LM encoded and how many were already cached.
 */
export async function encodeCorpus(opts: { corpus: string; limit?: number; log?: (s: string) => void }): Promise<{ encoded: number; cached: number }> {
  const log = opts.log ?? ((s: string) => process.stderr.write(`${s}\n`));
  const passages = await corpusPassages(opts.corpus, opts.limit);
  const engine = await Engine.load(await findModelDir(), { diskKeyCache: true });
  const progress = progressReporter(`${opts.corpus}: encoding keys`, "passages", log);
  progress.start(passages.length, 0);
  let encoded = 0;
  let cached = 0;
  try {
    for (const [i, p] of passages.entries()) {
      if (await engine.warmPassage(p)) encoded++;
      else cached++;
      progress.update(i + 1);
    }
  } finally {
    progress.stop();
    await engine.session.release();
  }
  log(`${opts.corpus}: ${encoded} passages encoded, ${cached} already cached`);
  return { encoded, cached };
}

/** Adds `nestlm encode` to the program. */
export function addEncodeCommand(program: Command): void {
  program
    .command("encode")
    .description("pre-encode a corpus's passages into the on-disk passage-key cache (resumable)")
    .option("--corpus <name>", "corpus to encode", "factbook")
    .option("--limit <n>", "only the first n passages", (v: string) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError("expected a positive integer");
      return n;
    })
    .action(async (o: { corpus: string; limit?: number }) => {
      await encodeCorpus(o);
    });
}
