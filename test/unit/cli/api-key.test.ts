import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { findApiKey, hashApiKey, loadOrCreateApiKey } from "@nest/cli/api-key";

let home: string | undefined;
afterEach(() => {
  if (home) rmSync(home, { recursive: true, force: true });
  home = undefined;
});

describe("api key", () => {
  it("hashes with SHA-256 hex (FIPS 180-2 vector `abc`)", () => {
    expect(hashApiKey("abc")).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  });

  it("creates the key file once, mode 0600, and reuses it", () => {
    home = mkdtempSync(join(tmpdir(), "nest-key-"));
    expect(findApiKey(home, {})).toBeUndefined();
    const first = loadOrCreateApiKey(home, {});
    expect(first.origin).toBe("file");
    expect(first.file).toBe(join(home, "api-key"));
    expect(first.key).toMatch(/^nest_[A-Za-z0-9_-]{43}$/);
    expect(statSync(first.file).mode & 0o777).toBe(0o600);
    expect(readFileSync(first.file, "utf8")).toBe(`${first.key}\n`);
    expect(loadOrCreateApiKey(home, {}).key).toBe(first.key);
    expect(findApiKey(home, {})?.key).toBe(first.key);
  });

  it("prefers NEST_API_KEY and then writes nothing", () => {
    home = mkdtempSync(join(tmpdir(), "nest-key-"));
    expect(loadOrCreateApiKey(home, { NEST_API_KEY: "k1" })).toEqual({ key: "k1", origin: "env", file: join(home, "api-key") });
    expect(() => statSync(join(home!, "api-key"))).toThrow(/ENOENT/);
  });
});
