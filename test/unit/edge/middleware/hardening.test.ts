/**
 * Issue 14 pieces of the edge and the shared protocol, by hand: method tables (405/Allow),
 * media types (415), lone surrogates, the Cache-Control policy of the answer cache, signature
 * header checks and the replay guard.
 */
import { describe, expect, it } from "vitest";
import { Hono } from "hono";
import { allowedMethods } from "@nest/edge/middleware/methods";
import { mediaType } from "@nest/edge/middleware/content-type";
import { parseJsonBody, wellFormed } from "@nest/edge/middleware/validate";
import { cachePolicy } from "@nest/edge/routes/generation";
import { ReplayGuard, checkSignatureHeaders, signingString } from "@nest/shared/protocol/hmac";

describe("allowedMethods", () => {
  const app = new Hono();
  app.get("/healthz", (c) => c.text("ok"));
  app.post("/v1/batches", (c) => c.text("x"));
  app.get("/v1/batches/:id", (c) => c.text("x"));
  app.post("/v1/batches/:id/cancel", (c) => c.text("x"));
  app.use(async (_c, next) => next());

  it("lists the methods of the routes matching a path, HEAD beside GET, OPTIONS always", () => {
    expect(allowedMethods(app, "/healthz")).toEqual(["GET", "HEAD", "OPTIONS"]);
    expect(allowedMethods(app, "/v1/batches")).toEqual(["OPTIONS", "POST"]);
    expect(allowedMethods(app, "/v1/batches/batch_1")).toEqual(["GET", "HEAD", "OPTIONS"]);
    expect(allowedMethods(app, "/v1/batches/batch_1/cancel")).toEqual(["OPTIONS", "POST"]);
    expect(allowedMethods(app, "/v1/batches/a/b/cancel")).toEqual([]);
    expect(allowedMethods(app, "/nothing")).toEqual([]);
  });
});

describe("input hygiene", () => {
  it("reads the media type without parameters", () => {
    expect(mediaType("Application/JSON; charset=utf-8")).toBe("application/json");
    expect(mediaType(undefined)).toBe("");
  });

  it("replaces lone surrogates, keeps pairs", () => {
    expect(wellFormed("a\uD800b")).toBe("a\uFFFDb");
    expect(wellFormed("\uDC00")).toBe("\uFFFD");
    expect(wellFormed("\uD83D\uDE00")).toBe("\uD83D\uDE00");
    expect(wellFormed("x\uD83D")).toBe("x\uFFFD");
    expect(parseJsonBody('{"q":"a\\ud800","n":[ "\\udc00b" ]}')).toEqual({ q: "a\uFFFD", n: ["\uFFFDb"] });
    expect(() => parseJsonBody("{q:")).toThrow(expect.objectContaining({ code: "invalid_json", status: 400 }));
    // Valid JSON nested deeper than the reviver's recursion: not "invalid JSON", a request refused as such.
    const deep = `${"[".repeat(200_000)}${"]".repeat(200_000)}`;
    expect(() => parseJsonBody(deep)).toThrow(
      expect.objectContaining({ code: "invalid_request", status: 400, message: "request body is nested too deeply" }),
    );
  });

  it("maps Cache-Control to the answer cache's lookup and store", () => {
    expect(cachePolicy(undefined)).toEqual({ lookup: true, store: true });
    expect(cachePolicy("no-cache")).toEqual({ lookup: false, store: true });
    expect(cachePolicy("max-age=0, No-Store")).toEqual({ lookup: false, store: false });
    expect(cachePolicy("no-transform")).toEqual({ lookup: true, store: true });
  });
});

describe("pool signatures", () => {
  it("signs timestamp and nonce on the first line", () => {
    expect(signingString(1700000000, "post", "/v1/decode?owner=ab", "{}", "00ff")).toBe("1700000000.00ff\nPOST\n/v1/decode?owner=ab\n{}");
    expect(signingString(1700000000, "GET", "/x", "")).toBe("1700000000\nGET\n/x\n");
  });

  it("checks the headers before any body", () => {
    const sig = "a".repeat(64);
    const nonce = "0123456789abcdef";
    expect(checkSignatureHeaders({ timestamp: "1700000000", signature: sig, nonce }, 1700000000, true)).toBeUndefined();
    expect(checkSignatureHeaders({ timestamp: undefined, signature: sig, nonce }, 1700000000, true)).toBe(
      "missing x-nest-timestamp or x-nest-signature",
    );
    expect(checkSignatureHeaders({ timestamp: "1699999699", signature: sig, nonce }, 1700000000, true)).toBe(
      "x-nest-timestamp is more than 300 s off",
    );
    expect(checkSignatureHeaders({ timestamp: "1700000000", signature: "zz", nonce }, 1700000000, true)).toBe("bad signature");
    expect(checkSignatureHeaders({ timestamp: "1700000000", signature: sig }, 1700000000, true)).toBe("missing or malformed x-nest-nonce");
    expect(checkSignatureHeaders({ timestamp: "1700000000", signature: sig, nonce: "short" }, 1700000000)).toBe(
      "missing or malformed x-nest-nonce",
    );
  });

  it("refuses a signature seen inside the window and forgets it after", () => {
    const guard = new ReplayGuard(3);
    expect(guard.check("AB", 1000, 1000)).toBe(false);
    expect(guard.check("ab", 1000, 1200)).toBe(true); // same signature, any case
    expect(guard.check("cd", 1000, 1200)).toBe(false);
    // 1000 + 300 + 1 = 1301 is the expiry: at 1302 both are forgotten.
    expect(guard.check("ef", 1302, 1302)).toBe(false);
    expect(guard.size).toBe(1);
    // Bounded: the oldest entries go first.
    guard.check("g1", 1302, 1302);
    guard.check("g2", 1302, 1302);
    guard.check("g3", 1302, 1302);
    expect(guard.size).toBe(3);
  });
});
