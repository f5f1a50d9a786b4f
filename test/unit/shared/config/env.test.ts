import { describe, expect, it } from "vitest";
import { nodeEnv } from "@nest/shared/config/node-env";
import { parseWorkersVars } from "@nest/shared/config/workers-env";

describe("nodeEnv", () => {
  it("applies the documented defaults", () => {
    expect(nodeEnv({})).toEqual({ NEST_KEY_CACHE: true, NEST_CORPUS_KEYS: true, NEST_FACTBOOK_DENSE: false, NEST_FUSION: "rrf" });
  });

  it("reads flags as the README says: `0` turns a default-on flag off, `1` a default-off flag on", () => {
    expect(nodeEnv({ NEST_KEY_CACHE: "0", NEST_CORPUS_KEYS: "1", NEST_FACTBOOK_DENSE: "1", NEST_FUSION: "adaptive" })).toEqual({
      NEST_KEY_CACHE: false, NEST_CORPUS_KEYS: true, NEST_FACTBOOK_DENSE: true, NEST_FUSION: "adaptive",
    });
    expect(nodeEnv({ NEST_FACTBOOK_DENSE: "yes", NEST_FUSION: "" })).toMatchObject({ NEST_FACTBOOK_DENSE: false, NEST_FUSION: "rrf" });
  });

  it("parses an env object once and freezes the result", () => {
    const env = { NEST_FUSION: "bm25" };
    const a = nodeEnv(env);
    env.NEST_FUSION = "dense";
    expect(nodeEnv(env)).toBe(a);
    expect(Object.isFrozen(a)).toBe(true);
  });

  it("names a malformed variable", () => {
    expect(() => nodeEnv({ NEST_FUSION: "dbsf" })).toThrow(/NEST_FUSION/);
  });
});

describe("parseWorkersVars", () => {
  it("applies the defaults of wrangler.toml's settings", () => {
    expect(parseWorkersVars({})).toEqual({
      NEST_POOL_URL: "", NEST_POOL_URLS: [], NEST_API_KEY_HASHES: [], NEST_CORPUS_VERSIONS: {}, NEST_FAQ_TTL_S: 86_400, UPSTASH_VECTOR_FUSION: "RRF",
    });
  });

  it("splits lists, parses the corpus versions JSON and the TTL in seconds", () => {
    const v = parseWorkersVars({
      NEST_POOL_URL: "http://a:8788",
      NEST_POOL_URLS: " http://b:8788 ,, http://c:8788",
      NEST_API_KEY_HASHES: "ab12,cd34",
      NEST_CORPUS_VERSIONS: '{"factbook":"cc9b92a3d9f7"}',
      NEST_FAQ_TTL_S: "60",
      UPSTASH_VECTOR_FUSION: "DBSF",
    });
    expect(v).toMatchObject({
      NEST_POOL_URLS: ["http://b:8788", "http://c:8788"],
      NEST_API_KEY_HASHES: ["ab12", "cd34"],
      NEST_CORPUS_VERSIONS: { factbook: "cc9b92a3d9f7" },
      NEST_FAQ_TTL_S: 60,
      UPSTASH_VECTOR_FUSION: "DBSF",
    });
    expect(parseWorkersVars({ UPSTASH_VECTOR_FUSION: "dbsf" }).UPSTASH_VECTOR_FUSION).toBe("RRF");
  });

  it("names a malformed setting", () => {
    expect(() => parseWorkersVars({ NEST_CORPUS_VERSIONS: "{factbook" })).toThrow(/NEST_CORPUS_VERSIONS/);
    expect(() => parseWorkersVars({ NEST_CORPUS_VERSIONS: '{"factbook": 3}' })).toThrow(/NEST_CORPUS_VERSIONS/);
  });
});
