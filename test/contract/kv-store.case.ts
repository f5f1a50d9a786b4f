/**
 * The {@link KvStore} contract (`edge/src/store/kv.ts`), as one suite every implementation runs:
 * memory, the JSON file of `nestlm keys`, Redis (`test/contract/kv-store.test.ts`) and Workers KV
 * inside workerd (`test/workerd/kv-store.test.ts`). Keys are namespaced per run (`ns`), so a shared
 * store (Redis, a KV namespace) may hold other data. Runs in Node and in workerd (no Node modules).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { KvStore } from "@nest/edge/store/kv";

/** A store under test. */
export interface KvStoreSubject {
  kv: KvStore;
  close?(): Promise<void>;
  /**
   * Lets `ms` of the store's time pass (a test clock, or a real wait); absent = the store cannot
   * expire entries within a test (Workers KV: 60 s minimum TTL) and expiry is not checked.
   */
  elapse?(ms: number): Promise<void>;
}

/** Defines the contract suite for the store `open` returns. */
export function kvStoreContract(name: string, open: () => Promise<KvStoreSubject>): void {
  describe(`KvStore contract: ${name}`, () => {
    let s: KvStoreSubject;
    let ns: string;
    beforeAll(async () => {
      s = await open();
    });
    afterAll(async () => {
      await s?.close?.();
    });
    const key = (k: string) => `${ns}${k}`;
    let n = 0;
    const fresh = () => (ns = `contract-${Date.now().toString(36)}-${n++}-`);

    it("answers null for an absent key; get returns what put stored; put overwrites", async () => {
      fresh();
      expect(await s.kv.get(key("a"))).toBeNull();
      await s.kv.put(key("a"), "1");
      expect(await s.kv.get(key("a"))).toBe("1");
      await s.kv.put(key("a"), '{"x":"é"}');
      expect(await s.kv.get(key("a"))).toBe('{"x":"é"}');
    });

    it("delete removes a key; deleting an absent key is not an error", async () => {
      fresh();
      await s.kv.put(key("d"), "v");
      await s.kv.delete(key("d"));
      expect(await s.kv.get(key("d"))).toBeNull();
      await s.kv.delete(key("never-there"));
    });

    it("incr starts an absent counter at 0 and returns the running sum, readable with get", async () => {
      fresh();
      expect(await s.kv.incr(key("c"), 3, 600)).toBe(3);
      expect(await s.kv.incr(key("c"), 4, 600)).toBe(7);
      expect(await s.kv.incr(key("c"), 0, 600)).toBe(7);
      expect(await s.kv.get(key("c"))).toBe("7");
      expect(await s.kv.incr(key("other"), 1, 600)).toBe(1);
    });

    it("lists exactly the keys under a prefix, stored ones and counters alike", async () => {
      fresh();
      await s.kv.put(key("p:1"), "a");
      await s.kv.put(key("p:2"), "b", 600);
      await s.kv.incr(key("p:3"), 1, 600);
      await s.kv.put(key("q:1"), "c");
      expect((await s.kv.list(key("p:"))).sort()).toEqual([key("p:1"), key("p:2"), key("p:3")]);
      expect(await s.kv.list(key("none:"))).toEqual([]);
    });

    it("a value put with a TTL is readable until it expires", async () => {
      fresh();
      await s.kv.put(key("t"), "soon", 1);
      await s.kv.put(key("keep"), "kept");
      expect(await s.kv.get(key("t"))).toBe("soon");
      if (!s.elapse) return;
      await s.elapse(2100);
      expect(await s.kv.get(key("t"))).toBeNull();
      expect(await s.kv.get(key("keep"))).toBe("kept");
      expect(await s.kv.list(key("t"))).toEqual([]);
    });

    it("a counter expires ttlS after the call that created it; later increments do not extend it", async () => {
      fresh();
      expect(await s.kv.incr(key("w"), 1, 2)).toBe(1);
      if (!s.elapse) return;
      await s.elapse(1100);
      expect(await s.kv.incr(key("w"), 1, 2)).toBe(2);
      await s.elapse(1100);
      expect(await s.kv.get(key("w"))).toBeNull();
      expect(await s.kv.incr(key("w"), 5, 2)).toBe(5);
    });
  });
}
