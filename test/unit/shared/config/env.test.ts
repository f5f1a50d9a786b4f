import { describe, expect, it } from "vitest";
import { parseWorkersVars } from "@nest/shared/config/workers-env";

describe("parseWorkersVars", () => {
  it("applies the defaults of wrangler.toml's settings", () => {
    expect(parseWorkersVars({})).toEqual({
      NEST_POOL_URL: "",
      NEST_POOL_URLS: [],
      NEST_API_KEY_HASHES: [],
      NEST_CORPUS_VERSIONS: {},
      NEST_FAQ_TTL_S: 86_400,
      UPSTASH_VECTOR_FUSION: "RRF",
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
