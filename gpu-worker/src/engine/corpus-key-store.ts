/**
 * @module engine/corpus-key-store
 * A whole corpus encoded ahead of time (`nestlm encode --corpus NAME`): the token keys of every
 * passage (nest-algorithm.md §2.1) in one compact store, so a request over the corpus does no LM
 * encoding. A request reads only its passages' rows, by offset (positioned reads, never the whole
 * store), and dequantises them into float32.
 *
 * Folder `$NEST_HOME/keys/<model key>/corpora/<corpus>/`, all little-endian:
 *
 * | file | content |
 * | --- | --- |
 * | `meta.json` | `{format, corpus, modelKey, hiddenSize, precision}` |
 * | `keys.bin` | key rows `[numKeys, hiddenSize]`: float32, fp16 (IEEE half) or int8 |
 * | `scales.bin` | int8 only: float32 scale per row `[numKeys]`, key ≈ int8 × scale, scale = max\|row\| / 127 |
 * | `tokens.bin` | int32 `[numTokens, 3]`: token id, UTF-16 start, UTF-16 end |
 * | `index.jsonl` | one line per passage `{id, sha, tok, n, row, c}`: sha = first 16 hex of sha256(text), first token, tokens, first key row, citable |
 *
 * Bytes per token: `hiddenSize × {4, 2, 1}` (+ 4 for the int8 scale) + 12 (token and offsets).
 * Writes append the binary rows first and the index line last; opening for writing truncates the
 * binary files to what the index covers, so an interrupted encode resumes cleanly.
 */
import { createHash } from "node:crypto";
import { open, readFile, mkdir, writeFile, stat, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import type { Passage } from "@nest/shared/protocol/passage";
import type { EncodedPassage } from "../nest/token-store.ts";

export const KEY_PRECISIONS = ["fp32", "fp16", "int8"] as const;
export type KeyPrecision = (typeof KEY_PRECISIONS)[number];

const MetaSchema = z.object({
  format: z.literal("nest-corpus-keys/1"),
  corpus: z.string(),
  modelKey: z.string(),
  hiddenSize: z.number().int().positive(),
  precision: z.enum(KEY_PRECISIONS),
});
export type CorpusKeyMeta = z.infer<typeof MetaSchema>;

/** One line of `index.jsonl`: a stored passage (its id, text hash, first token row, token count, first key row, citable). */
const IndexEntrySchema = z.object({
  id: z.string(),
  sha: z.string(),
  tok: z.number().int().nonnegative(),
  n: z.number().int().nonnegative(),
  row: z.number().int().nonnegative(),
  c: z.boolean(),
});
type IndexEntry = z.infer<typeof IndexEntrySchema>;

/** Bytes of one stored key row. */
export function rowBytes(precision: KeyPrecision, hiddenSize: number): number {
  return hiddenSize * (precision === "fp32" ? 4 : precision === "fp16" ? 2 : 1);
}

/** Bytes stored per passage token (key row, int8 scale, token id and offsets). */
export function bytesPerToken(precision: KeyPrecision, hiddenSize: number): number {
  return rowBytes(precision, hiddenSize) + (precision === "int8" ? 4 : 0) + 12;
}

/** First 16 hex digits of sha256(text): a stored passage is used only when its text is unchanged. */
export function textSha(text: string): string {
  return createHash("sha256").update(text).digest("hex").slice(0, 16);
}

// ---- fp16 -------------------------------------------------------------------------------------
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** IEEE 754 half-precision bits of `v`, rounded to nearest even (overflow → ±Infinity). */
export function toHalf(v: number): number {
  f32[0] = v;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let hm = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && hm & 1)) hm++;
    return sign | hm;
  }
  let hm = mant >>> 13;
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && hm & 1)) {
    hm++;
    if (hm === 0x400) {
      hm = 0;
      e++;
      if (e >= 0x1f) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | hm;
}

let halfTable: Float32Array | undefined;
/** float32 value of every half-precision bit pattern. @shape [65536] */
function halfToFloat(): Float32Array {
  if (halfTable) return halfTable;
  halfTable = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    halfTable[h] = e === 0 ? sign * m * 2 ** -24 : e === 0x1f ? (m ? NaN : sign * Infinity) : sign * (1 + m / 1024) * 2 ** (e - 15);
  }
  return halfTable;
}

/** Decodes half-precision bits. */
export function fromHalf(bits: number): number {
  return halfToFloat()[bits & 0xffff]!;
}

// ---- encoding rows ------------------------------------------------------------------------------
/**
 * Quantises key rows for storage.
 * @param keys @shape [rows, hidden] float32
 * @returns the row bytes and, for int8, the per-row scales.
 */
export function quantizeRows(keys: Float32Array, hidden: number, precision: KeyPrecision): { rows: Uint8Array; scales?: Float32Array } {
  const numRows = keys.length / hidden;
  if (precision === "fp32") return { rows: new Uint8Array(keys.buffer.slice(keys.byteOffset, keys.byteOffset + keys.byteLength)) };
  if (precision === "fp16") {
    const out = new Uint16Array(keys.length);
    for (let i = 0; i < keys.length; i++) out[i] = toHalf(keys[i]!);
    return { rows: new Uint8Array(out.buffer) };
  }
  const out = new Int8Array(keys.length);
  const scales = new Float32Array(numRows);
  for (let r = 0; r < numRows; r++) {
    let max = 0;
    for (let d = 0; d < hidden; d++) max = Math.max(max, Math.abs(keys[r * hidden + d]!));
    const scale = max / 127;
    scales[r] = scale;
    if (scale === 0) continue;
    for (let d = 0; d < hidden; d++) out[r * hidden + d] = Math.max(-127, Math.min(127, Math.round(keys[r * hidden + d]! / scale)));
  }
  return { rows: new Uint8Array(out.buffer), scales };
}

/** Inverse of {@link quantizeRows}: float32 keys `[rows, hidden]` from stored bytes. */
export function dequantizeRows(bytes: Uint8Array, hidden: number, precision: KeyPrecision, scales?: Float32Array): Float32Array {
  if (precision === "fp32") return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  if (precision === "fp16") {
    const bits = new Uint16Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    const table = halfToFloat();
    const out = new Float32Array(bits.length);
    for (let i = 0; i < bits.length; i++) out[i] = table[bits[i]!]!;
    return out;
  }
  const q = new Int8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(q.length);
  for (let i = 0; i < q.length; i++) out[i] = q[i]! * scales![Math.floor(i / hidden)]!;
  return out;
}

async function readIndex(dir: string): Promise<IndexEntry[]> {
  let text: string;
  try {
    text = await readFile(join(dir, "index.jsonl"), "utf8");
  } catch {
    return [];
  }
  // A torn last line (interrupted write) ends the index: its rows are truncated on the next write.
  const out: IndexEntry[] = [];
  for (const line of text.split("\n")) {
    if (!line) continue;
    let entry: IndexEntry;
    try {
      entry = IndexEntrySchema.parse(JSON.parse(line));
    } catch {
      break;
    }
    out.push(entry);
  }
  return out;
}

async function readMeta(dir: string): Promise<CorpusKeyMeta | undefined> {
  try {
    return MetaSchema.parse(JSON.parse(await readFile(join(dir, "meta.json"), "utf8")));
  } catch {
    return undefined;
  }
}

/**
 * Reads a corpus's pre-encoded keys by passage; re-reads its index when an encode has added to it.
 * Holds no open files: each {@link getMany} opens the data files, reads its passages' rows by
 * offset and closes them.
 */
export class CorpusKeyStore {
  private byId = new Map<string, IndexEntry>();
  private indexBytes = -1;

  private constructor(
    readonly dir: string,
    readonly meta: CorpusKeyMeta,
  ) {}

  /**
   * Opens the store in `dir` for reading.
   * @returns undefined when there is no complete store there or it was made by another model.
   */
  static async open(dir: string, expect: { modelKey: string; hiddenSize: number }): Promise<CorpusKeyStore | undefined> {
    const meta = await readMeta(dir);
    if (!meta || meta.modelKey !== expect.modelKey || meta.hiddenSize !== expect.hiddenSize) return undefined;
    const store = new CorpusKeyStore(dir, meta);
    await store.refresh();
    return store;
  }

  /** Passages stored. */
  get size(): number {
    return this.byId.size;
  }

  /** Re-reads the index if it grew (one `stat` when it did not). */
  async refresh(): Promise<void> {
    const bytes = (await stat(join(this.dir, "index.jsonl")).catch(() => undefined))?.size ?? 0;
    if (bytes === this.indexBytes) return;
    this.indexBytes = bytes;
    this.byId = new Map((await readIndex(this.dir)).map((e) => [e.id, e]));
  }

  /** True when `passage` (same id and text) is stored. */
  has(passage: Passage): boolean {
    return this.byId.get(passage.id)?.sha === textSha(passage.text);
  }

  /** The stored encoding of `passage` (see {@link getMany}). */
  async get(passage: Passage): Promise<EncodedPassage | undefined> {
    return (await this.getMany([passage]))[0];
  }

  /**
   * The stored encodings of `passages`, dequantised to float32; undefined for a passage that is not
   * stored (or whose text changed since it was encoded), and for all of them when the data files
   * cannot be read.
   */
  async getMany(passages: readonly Passage[]): Promise<(EncodedPassage | undefined)[]> {
    const found = passages.map((p) => {
      const e = this.byId.get(p.id);
      return e && e.sha === textSha(p.text) ? e : undefined;
    });
    if (found.every((e) => e === undefined)) return found.map(() => undefined);
    const files: FileHandle[] = [];
    try {
      const openFile = async (name: string) => {
        const f = await open(join(this.dir, name), "r");
        files.push(f);
        return f;
      };
      const keys = await openFile("keys.bin");
      const tokens = await openFile("tokens.bin");
      const scales = this.meta.precision === "int8" ? await openFile("scales.bin") : undefined;
      return await Promise.all(passages.map((p, i) => (found[i] ? this.read(p, found[i]!, keys, tokens, scales) : undefined)));
    } catch {
      return passages.map(() => undefined);
    } finally {
      await Promise.all(files.map((f) => f.close()));
    }
  }

  private async read(
    passage: Passage,
    e: IndexEntry,
    keys: FileHandle,
    tokenFile: FileHandle,
    scaleFile?: FileHandle,
  ): Promise<EncodedPassage> {
    const h = this.meta.hiddenSize;
    const numKeys = Math.max(0, e.n - 1);
    const rb = rowBytes(this.meta.precision, h);
    const tok = new Int32Array(e.n * 3);
    const rows = new Uint8Array(numKeys * rb);
    const scales = scaleFile ? new Float32Array(numKeys) : undefined;
    const reads = await Promise.all([
      tokenFile.read(new Uint8Array(tok.buffer), 0, tok.byteLength, e.tok * 12),
      numKeys > 0 ? keys.read(rows, 0, rows.byteLength, e.row * rb) : undefined,
      scales && numKeys > 0 ? scaleFile!.read(new Uint8Array(scales.buffer), 0, scales.byteLength, e.row * 4) : undefined,
    ]);
    if (reads[0].bytesRead !== tok.byteLength || (reads[1] && reads[1].bytesRead !== rows.byteLength)) {
      throw new Error(`${this.dir}: short read for passage ${passage.id}`);
    }
    const tokens = new Int32Array(e.n);
    const charStart = new Int32Array(e.n);
    const charEnd = new Int32Array(e.n);
    for (let i = 0; i < e.n; i++) {
      tokens[i] = tok[3 * i]!;
      charStart[i] = tok[3 * i + 1]!;
      charEnd[i] = tok[3 * i + 2]!;
    }
    return { passage, tokens, charStart, charEnd, citable: e.c, keys: dequantizeRows(rows, h, this.meta.precision, scales) };
  }
}

/** Appends encoded passages to a corpus store (created when missing, resumed when present). */
export class CorpusKeyWriter {
  private constructor(
    readonly dir: string,
    readonly meta: CorpusKeyMeta,
    private readonly done: Set<string>,
    private numTokens: number,
    private numRows: number,
  ) {}

  /**
   * Opens (or creates) the store in `dir`, dropping binary rows an interrupted run wrote past its index.
   * @throws Error when a store of another model, width or precision is there (delete it or pass its precision).
   */
  static async open(dir: string, meta: Omit<CorpusKeyMeta, "format">): Promise<CorpusKeyWriter> {
    await mkdir(dir, { recursive: true });
    const full: CorpusKeyMeta = { format: "nest-corpus-keys/1", ...meta };
    const existing = await readMeta(dir);
    let index: IndexEntry[] = [];
    if (existing) {
      if (existing.modelKey !== meta.modelKey || existing.hiddenSize !== meta.hiddenSize || existing.precision !== meta.precision) {
        throw new Error(
          `${dir} holds ${existing.precision} keys of model ${existing.modelKey}; asked for ${meta.precision} keys of ${meta.modelKey} (remove the folder to re-encode)`,
        );
      }
      index = await readIndex(dir);
    } else {
      await writeFile(join(dir, "meta.json"), `${JSON.stringify(full, null, 2)}\n`);
    }
    const last = index.at(-1);
    const numTokens = last ? last.tok + last.n : 0;
    const numRows = last ? last.row + Math.max(0, last.n - 1) : 0;
    const rb = rowBytes(meta.precision, meta.hiddenSize);
    // Keep exactly what the index covers; a torn index line is rewritten without it.
    await truncateTo(join(dir, "keys.bin"), numRows * rb);
    await truncateTo(join(dir, "tokens.bin"), numTokens * 12);
    if (meta.precision === "int8") await truncateTo(join(dir, "scales.bin"), numRows * 4);
    await writeFile(join(dir, "index.jsonl"), index.map((e) => `${JSON.stringify(e)}\n`).join(""));
    return new CorpusKeyWriter(dir, full, new Set(index.map((e) => `${e.id}\0${e.sha}`)), numTokens, numRows);
  }

  /** Passages stored so far. */
  get size(): number {
    return this.done.size;
  }

  /** True when `passage` (same id and text) is stored already. */
  has(passage: Passage): boolean {
    return this.done.has(`${passage.id}\0${textSha(passage.text)}`);
  }

  /** Appends `entries` (binary rows first, then their index lines). */
  async append(entries: readonly EncodedPassage[]): Promise<void> {
    const { hiddenSize: h, precision } = this.meta;
    const keyParts: Uint8Array[] = [];
    const scaleParts: Uint8Array[] = [];
    const tokenParts: Uint8Array[] = [];
    const lines: string[] = [];
    for (const e of entries) {
      const n = e.tokens.length;
      const { rows, scales } = quantizeRows(e.keys, h, precision);
      keyParts.push(rows);
      if (scales) scaleParts.push(new Uint8Array(scales.buffer));
      const tok = new Int32Array(n * 3);
      for (let i = 0; i < n; i++) {
        tok[3 * i] = e.tokens[i]!;
        tok[3 * i + 1] = e.charStart[i]!;
        tok[3 * i + 2] = e.charEnd[i]!;
      }
      tokenParts.push(new Uint8Array(tok.buffer));
      const entry: IndexEntry = { id: e.passage.id, sha: textSha(e.passage.text), tok: this.numTokens, n, row: this.numRows, c: e.citable };
      lines.push(`${JSON.stringify(entry)}\n`);
      this.numTokens += n;
      this.numRows += Math.max(0, n - 1);
      this.done.add(`${entry.id}\0${entry.sha}`);
    }
    await appendBytes(join(this.dir, "keys.bin"), keyParts);
    await appendBytes(join(this.dir, "tokens.bin"), tokenParts);
    if (precision === "int8") await appendBytes(join(this.dir, "scales.bin"), scaleParts);
    await appendBytes(join(this.dir, "index.jsonl"), [Buffer.from(lines.join(""), "utf8")]);
  }
}

async function truncateTo(path: string, bytes: number): Promise<void> {
  const f = await open(path, "a+");
  try {
    const size = (await f.stat()).size;
    if (size < bytes)
      throw new Error(`${path} is ${size} bytes, its index needs ${bytes}: the store is damaged (remove the folder to re-encode)`);
    if (size > bytes) await f.truncate(bytes);
  } finally {
    await f.close();
  }
}

async function appendBytes(path: string, parts: readonly Uint8Array[]): Promise<void> {
  const f = await open(path, "a");
  try {
    await f.write(Buffer.concat(parts.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength))));
    await f.sync();
  } finally {
    await f.close();
  }
}

/** Folder of a corpus's pre-encoded keys under the model's key folder `$NEST_HOME/keys/<model key>`. */
export function corpusKeysDir(modelKeysDir: string, corpus: string): string {
  return join(modelKeysDir, "corpora", corpus);
}

/** How long a corpus found without a store is not looked for again, in ms. */
const MISSING_RECHECK_MS = 10_000;

/**
 * Opens corpus stores on first use and keeps them open; an open store re-reads its index when an
 * encode has added to it, and a corpus without one is looked for again after 10 s.
 * @param modelKeysDir `$NEST_HOME/keys/<model key>`.
 */
export function corpusKeyResolver(
  modelKeysDir: string,
  expect: { modelKey: string; hiddenSize: number },
): (corpus: string) => Promise<CorpusKeyStore | undefined> {
  const opened = new Map<string, { store?: CorpusKeyStore; checkedMs: number }>();
  return async (corpus) => {
    const seen = opened.get(corpus);
    if (seen?.store) {
      await seen.store.refresh();
      return seen.store;
    }
    if (seen && performance.now() - seen.checkedMs < MISSING_RECHECK_MS) return undefined;
    const store = await CorpusKeyStore.open(corpusKeysDir(modelKeysDir, corpus), expect);
    opened.set(corpus, { store, checkedMs: performance.now() });
    return store;
  };
}
