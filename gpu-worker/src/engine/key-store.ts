/**
 * @module engine/key-store
 * The on-disk tier of the passage-key cache: one file per encoded passage under
 * `$NEST_HOME/keys/<model key>/<hh>/<sha256>.bin`, where the model key names the model export and
 * its precision (keys are only valid for the model that made them) and the sha256 covers the
 * passage id and text. Files are written to a temporary name and renamed, so a reader never sees a
 * partial file; an unreadable file counts as a miss.
 *
 * File layout (little-endian): uint32 header length, JSON header `{ id, numTokens, hidden, citable }`,
 * then int32 tokens, int32 charStart, int32 charEnd `[numTokens]` each, float32 keys
 * `[numTokens - 1, hidden]`.
 */
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import type { Passage } from "@nest/shared/protocol/passage";
import type { EncodedPassage } from "../nest/token-store.ts";

/** The JSON header of a key file (module comment); a file whose header does not parse is a miss. */
const KeyFileHeaderSchema = z.object({
  id: z.string(),
  numTokens: z.number().int().nonnegative(),
  hidden: z.number().int().positive(),
  citable: z.boolean(),
});

export class DiskKeyStore {
  /**
   * @param root folder of this model's keys, e.g. `$NEST_HOME/keys/<model key>`.
   * @param hiddenSize expected key width; files of another width are ignored.
   */
  constructor(
    readonly root: string,
    private readonly hiddenSize: number,
  ) {}

  private path(hash: string): string {
    return join(this.root, hash.slice(0, 2), `${hash}.bin`);
  }

  /** The stored encoding of `passage` (hash = its cache hash), or undefined on a miss. */
  async get(hash: string, passage: Passage): Promise<EncodedPassage | undefined> {
    let buf: Buffer;
    try {
      buf = await readFile(this.path(hash));
    } catch {
      return undefined;
    }
    try {
      const headerLen = buf.readUInt32LE(0);
      const header = KeyFileHeaderSchema.parse(JSON.parse(buf.subarray(4, 4 + headerLen).toString("utf8")));
      if (header.id !== passage.id || header.hidden !== this.hiddenSize) return undefined;
      const n = header.numTokens;
      const body = buf.subarray(4 + headerLen);
      // Copy into fresh, aligned buffers.
      const ints = new Int32Array(body.buffer.slice(body.byteOffset, body.byteOffset + 3 * n * 4));
      const keysBytes = body.subarray(3 * n * 4);
      const keys = new Float32Array(keysBytes.buffer.slice(keysBytes.byteOffset, keysBytes.byteOffset + keysBytes.byteLength));
      if (keys.length !== Math.max(0, n - 1) * this.hiddenSize) return undefined;
      return {
        passage,
        tokens: ints.slice(0, n),
        charStart: ints.slice(n, 2 * n),
        charEnd: ints.slice(2 * n, 3 * n),
        citable: header.citable,
        keys,
      };
    } catch {
      return undefined;
    }
  }

  /** Stores `e` under `hash` (atomic: temporary file, then rename). */
  async put(hash: string, e: EncodedPassage): Promise<void> {
    const header = Buffer.from(
      JSON.stringify({ id: e.passage.id, numTokens: e.tokens.length, hidden: this.hiddenSize, citable: e.citable }),
      "utf8",
    );
    const len = Buffer.alloc(4);
    len.writeUInt32LE(header.length, 0);
    const parts = [
      len,
      header,
      Buffer.from(e.tokens.buffer, e.tokens.byteOffset, e.tokens.byteLength),
      Buffer.from(e.charStart.buffer, e.charStart.byteOffset, e.charStart.byteLength),
      Buffer.from(e.charEnd.buffer, e.charEnd.byteOffset, e.charEnd.byteLength),
      Buffer.from(e.keys.buffer, e.keys.byteOffset, e.keys.byteLength),
    ];
    const path = this.path(hash);
    await mkdir(join(path, ".."), { recursive: true });
    const tmp = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
    await writeFile(tmp, Buffer.concat(parts));
    await rename(tmp, path);
  }
}
