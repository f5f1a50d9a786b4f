/**
 * Decoding starts on the store's text while the LM encodes the passages no cache held (issue 13,
 * time to first token): the sentence anchor's quote is streamed before the first key file is
 * written, and the answer is the one a fully cached store gives (real model, greedy).
 */
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { findModelDir } from "@nest/gpu-worker/runtime/prepare-model";
import { Engine } from "@nest/gpu-worker/engine/engine";
import { GenerateRequestSchema } from "@nest/shared/protocol/request";
import type { DeltaEvent, DoneEvent } from "@nest/shared/protocol/events";

const PASSAGES = [
  { id: "a", title: "Australia", source: "t", text: "Australia, capital: name: Canberra; geographic coordinates: 35 17 S, 149 08 E" },
  { id: "b", title: "Nepal", source: "t", text: "Nepal, elevation extremes: highest point: Mount Everest 8,850 m" },
  { id: "c", title: "Kiribati", source: "t", text: "Kiribati, capital: name: Tarawa; it lies between Hawaii and Australia." },
];

let home: string;
let engine: Engine;

async function keyFiles(): Promise<number> {
  const entries = await readdir(join(home, "keys"), { recursive: true }).catch(() => [] as string[]);
  return entries.filter((e) => e.endsWith(".bin")).length;
}

async function ask(): Promise<{ deltas: DeltaEvent[]; done: DoneEvent; filesAtFirstDelta: Promise<number> | undefined }> {
  const request = GenerateRequestSchema.parse({ prompt: "What is the capital of Australia?", mode: "nest", max_new_tokens: 24 });
  const deltas: DeltaEvent[] = [];
  let done: DoneEvent | undefined;
  let filesAtFirstDelta: Promise<number> | undefined;
  await engine.run({ request, passages: PASSAGES } as never, {
    delta: (d) => {
      // Counted at once (readdir starts now), before the job goes on.
      filesAtFirstDelta ??= keyFiles();
      deltas.push(d);
    },
    done: (d) => {
      done = d;
    },
  });
  return { deltas, done: done!, filesAtFirstDelta };
}

beforeAll(async () => {
  home = await mkdtemp(join(tmpdir(), "nest-staged-"));
  engine = await Engine.load(await findModelDir(), { home, diskKeyCache: true, corpusKeys: false, precision: "fp32" });
});
afterAll(async () => {
  await rm(home, { recursive: true, force: true });
});

describe("staged token store", () => {
  it("streams the quote before the passages are encoded, then answers as a cached store does", async () => {
    const cold = await ask();
    expect(cold.done.usage.encoded_passages).toBe(3);
    // The first delta is the anchor's quote of passage a, cited, and no key was on disk yet.
    expect(cold.deltas[0]!.citation?.passage_id).toBe("a");
    expect(cold.deltas[0]!.text.startsWith("Australia, capital")).toBe(true);
    expect(await cold.filesAtFirstDelta).toBe(0);
    expect(await keyFiles()).toBe(3);

    // Second ask: every passage from the memory LRU (nothing staged), same text and citations.
    const warm = await ask();
    expect(warm.done.usage.encoded_passages).toBe(0);
    const text = (r: typeof cold) => r.deltas.map((d) => d.text).join("");
    expect(text(warm)).toBe(text(cold));
    expect(warm.deltas.map((d) => d.citation ?? null)).toEqual(cold.deltas.map((d) => d.citation ?? null));
    expect(warm.done.usage.completion_tokens).toBe(cold.done.usage.completion_tokens);
    expect(warm.done.usage.lm_forward_passes).toBe(cold.done.usage.lm_forward_passes);
  });
});
