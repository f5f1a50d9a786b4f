/**
 * The passage-key cache (issue 3): memory LRU, disk tier, eviction and invalidation when the model
 * changes, with the real model.
 */
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { findModelDir } from "@nest/gpu-worker/runtime/prepare-model";
import { readManifest, type Manifest } from "@nest/gpu-worker/runtime/manifest";
import { DecoderSession } from "@nest/gpu-worker/runtime/decoder-session";
import { ModelTokenizer } from "@nest/gpu-worker/runtime/tokenizer";
import { PassageEncoder } from "@nest/gpu-worker/engine/passage-encoder";
import { DiskKeyStore } from "@nest/gpu-worker/engine/key-store";

const PASSAGES = [
  { id: "a", title: "A", source: "t", text: "Australia, capital: name: Canberra; geographic coordinates: 35 17 S, 149 08 E" },
  { id: "b", title: "B", source: "t", text: "Nepal, elevation extremes: highest point: Mount Everest 8,850 m" },
];

let manifest: Manifest;
let lm: DecoderSession;
let tok: ModelTokenizer;
let root: string;

const encoder = (modelKey: string, maxBytes?: number) =>
  new PassageEncoder(lm, tok, manifest.bos_token_id, modelKey, maxBytes, new DiskKeyStore(join(root, "keys"), manifest.hidden_size));

beforeAll(async () => {
  const dir = await findModelDir();
  manifest = await readManifest(dir);
  lm = await DecoderSession.load(dir, manifest, { precision: "fp32" });
  tok = await ModelTokenizer.load(dir, manifest);
  root = await mkdtemp(join(tmpdir(), "nest-keys-"));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("passage-key cache", () => {
  it("encodes on a miss, then serves memory hits", async () => {
    const enc = encoder("m1");
    const first = await enc.buildStore(PASSAGES);
    expect([first.numEncoded, first.numFromDisk, first.numFromMemory]).toEqual([2, 0, 0]);
    const second = await enc.buildStore(PASSAGES);
    expect([second.numEncoded, second.numFromDisk, second.numFromMemory]).toEqual([0, 0, 2]);
    expect(second.store.keys).toEqual(first.store.keys);
  });

  it("serves a fresh process from disk with identical keys and offsets", async () => {
    const fromLm = (await encoder("m1").buildStore(PASSAGES)).store; // memory is per encoder: this one reads disk
    const fresh = await encoder("m1").buildStore(PASSAGES);
    expect([fresh.numEncoded, fresh.numFromDisk]).toEqual([0, 2]);
    expect(fresh.store.keys).toEqual(fromLm.keys);
    expect(fresh.store.values).toEqual(fromLm.values);
    expect(fresh.store.passages[0]!.charEnd).toEqual(fromLm.passages[0]!.charEnd);
  });

  it("evicts from memory beyond its byte bound, and the disk still answers", async () => {
    const oneKeyBlock = (tok.encode(PASSAGES[0]!.text).length - 1) * manifest.hidden_size * 4;
    const enc = encoder("m1", oneKeyBlock + 1);
    await enc.buildStore(PASSAGES);
    const again = await enc.buildStore([PASSAGES[0]!]);
    expect([again.numFromMemory, again.numFromDisk, again.numEncoded]).toEqual([0, 1, 0]);
  });

  it("misses when the model changes (keys are only valid for the model that made them)", async () => {
    const other = await encoder("m2").buildStore(PASSAGES);
    expect(other.numEncoded).toBe(2);
  });

  it("treats an unreadable file as a miss", async () => {
    const keysDir = join(root, "keys");
    for (const sub of await readdir(keysDir)) {
      for (const f of await readdir(join(keysDir, sub))) await writeFile(join(keysDir, sub, f), "garbage");
    }
    const r = await encoder("m1").buildStore(PASSAGES);
    expect(r.numEncoded).toBe(2);
  });

  it("treats a file whose JSON header has the wrong shape as a miss", async () => {
    const keysDir = join(root, "keys");
    const header = Buffer.from(JSON.stringify({ id: PASSAGES[0]!.id, numTokens: "3", hidden: manifest.hidden_size, citable: true }));
    const len = Buffer.alloc(4);
    len.writeUInt32LE(header.length, 0);
    for (const sub of await readdir(keysDir)) {
      for (const f of await readdir(join(keysDir, sub)))
        await writeFile(join(keysDir, sub, f), Buffer.concat([len, header, Buffer.alloc(64)]));
    }
    const r = await encoder("m1").buildStore(PASSAGES);
    expect(r.numEncoded).toBe(2);
  });
});
