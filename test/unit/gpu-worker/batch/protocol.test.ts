import { describe, expect, it } from "vitest";
import { NestError } from "@nest/shared/protocol/errors";
import { parseBatchBody, parseServableBatchBody, splitFailure } from "@nest/gpu-worker/batch/protocol";
import { failsEveryTime } from "@nest/gpu-worker/batch/consumer";
import { redactRedisUrl } from "@nest/gpu-worker/batch/redis-policy";

function fails(body: string, message: string | RegExp, code = "invalid_request", max?: number) {
  try {
    parseBatchBody(body, max);
  } catch (e) {
    expect(e).toBeInstanceOf(NestError);
    expect((e as NestError).code).toBe(code);
    if (typeof message === "string") expect((e as NestError).message).toBe(message);
    else expect((e as NestError).message).toMatch(message);
    return;
  }
  throw new Error("expected parseBatchBody to throw");
}

describe("parseBatchBody", () => {
  it("reads JSONL, skips blank lines, applies request defaults and keeps custom_id apart", () => {
    const items = parseBatchBody('{"custom_id":"a","prompt":"Hi","mode":"base"}\n\r\n  \n{"prompt":"Yo","max_new_tokens":4}\n');
    expect(items.length).toBe(2);
    expect(items[0]).toMatchObject({
      index: 0,
      custom_id: "a",
      request: { prompt: "Hi", mode: "base", max_new_tokens: 128, corpus: "factbook" },
    });
    expect(items[1]).toMatchObject({ index: 1, custom_id: null, request: { prompt: "Yo", mode: "nest", max_new_tokens: 4 } });
    expect("custom_id" in items[0]!.request).toBe(false);
  });

  it("reads a JSON array the same way", () => {
    const jsonl = parseBatchBody('{"custom_id":"a","prompt":"Hi"}\n{"prompt":"Yo"}');
    const arr = parseBatchBody(' [{"custom_id":"a","prompt":"Hi"},{"prompt":"Yo"}]');
    expect(arr).toEqual(jsonl);
  });

  it("names the 1-based line of a bad request (blank lines counted)", () => {
    fails('{"prompt":"ok"}\n\n{"prompt":"x","max_new_tokens":0}', /^line 3: max_new_tokens: /);
    fails('{"prompt":"ok"}\n{oops', /^line 2: not valid JSON: /);
    fails('{"prompt":"ok"}\n[1]', "line 2: expected a JSON object (a generation request)");
    fails(
      '[{"prompt":"ok"},{"prompt":"a","messages":[{"role":"user","content":"b"}]}]',
      "item 2: prompt: give exactly one of `prompt` or `messages`",
    );
    fails('{"prompt":"ok","custom_id":""}', /^line 1: custom_id: /);
    fails('{"prompt":"ok","bogus":1}', /^line 1: /);
  });

  it("refuses empty batches, duplicate custom_ids and too many items", () => {
    fails("\n \n", "the batch is empty: send JSONL (one request per line) or a JSON array");
    fails("[]", "the batch is empty: send JSONL (one request per line) or a JSON array");
    fails('{"custom_id":"x","prompt":"a"}\n{"custom_id":"x","prompt":"b"}', "duplicate custom_id `x` (item 2)");
    fails('{"prompt":"a"}\n{"prompt":"b"}\n{"prompt":"c"}', "a batch holds at most 2 requests", "payload_too_large", 2);
    fails('[{"prompt":"a"},{"prompt":"b"},{"prompt":"c"}]', "a batch holds at most 2 requests", "payload_too_large", 2);
  });
});

describe("splitFailure", () => {
  it("splits `code: message`, else reports internal", () => {
    expect(splitFailure("not_found: unknown corpus `x`")).toEqual({ code: "not_found", message: "unknown corpus `x`" });
    expect(splitFailure("Boom: x")).toEqual({ code: "internal", message: "Boom: x" });
    expect(splitFailure(undefined)).toEqual({ code: "internal", message: "unknown failure" });
  });
});

describe("redactRedisUrl", () => {
  it("hides the password", () => {
    expect(redactRedisUrl("redis://user:secret@10.0.0.1:6380/2")).toBe("redis://user:***@10.0.0.1:6380/2");
    expect(redactRedisUrl("redis://127.0.0.1:6379")).toBe("redis://127.0.0.1:6379");
  });
});

describe("parseBatchBody and lone surrogates (issue 14)", () => {
  it("replaces them in every string, JSONL and JSON array alike", () => {
    const line = JSON.stringify({ custom_id: "id\uD800", prompt: "Capital of Peru?\uDC00" });
    const [a] = parseBatchBody(line);
    expect(a!.custom_id).toBe("id\uFFFD");
    expect(a!.request.prompt).toBe("Capital of Peru?\uFFFD");
    const [b] = parseBatchBody(`[${line}]`);
    expect(b!.custom_id).toBe("id\uFFFD");
  });

  it("refuses a whitespace-only prompt", () => {
    expect(() => parseBatchBody(JSON.stringify({ prompt: "  \t" }))).toThrow(/^line 1: prompt: must not be blank/);
  });
});

describe("parseServableBatchBody (attack finding: unknown corpus accepted, failed 8 s later)", () => {
  const served = (names: string[]) => {
    const asked: string[] = [];
    const hasCorpus = async (c: string) => {
      asked.push(c);
      return names.includes(c);
    };
    return { asked, hasCorpus };
  };

  it("refuses the first line naming a corpus the pool does not serve: 404 not_found naming the line and field", async () => {
    const { asked, hasCorpus } = served(["factbook"]);
    const body = [
      '{"prompt":"a"}',
      "",
      '{"prompt":"b","corpus":"factbook"}',
      '{"prompt":"ok","corpus":"nope","max_new_tokens":4,"custom_id":"badcorpus"}',
    ];
    const err = await parseServableBatchBody(body.join("\n"), hasCorpus).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NestError);
    expect((err as NestError).code).toBe("not_found");
    expect((err as NestError).status).toBe(404);
    expect((err as NestError).message).toBe("line 4: corpus: unknown corpus `nope`");
    // Each distinct corpus is looked up once (the default corpus is factbook).
    expect(asked).toEqual(["factbook", "nope"]);
  });

  it("names the item of a JSON array, skips items with documents, and accepts a servable batch unchanged", async () => {
    const { hasCorpus } = served(["factbook"]);
    await expect(parseServableBatchBody('[{"prompt":"a"},{"prompt":"b","corpus":"nope"}]', hasCorpus)).rejects.toThrow(
      /^item 2: corpus: unknown corpus `nope`$/,
    );
    const body = '{"prompt":"a","custom_id":"x"}\n{"prompt":"b","documents":[{"text":"Canberra is the capital."}]}';
    expect(await parseServableBatchBody(body, served([]).hasCorpus).catch((e: Error) => e.message)).toBe(
      "line 1: corpus: unknown corpus `factbook`",
    );
    expect(await parseServableBatchBody(body, hasCorpus)).toEqual(parseBatchBody(body));
  });

  it("reports a malformed line before any corpus lookup", async () => {
    const { asked, hasCorpus } = served([]);
    await expect(parseServableBatchBody('{"prompt":"a","corpus":"nope"}\n{"prompt":"b","max_new_tokens":-1}', hasCorpus)).rejects.toThrow(
      /^line 2: max_new_tokens: /,
    );
    expect(asked).toEqual([]);
  });
});

describe("failsEveryTime (which item errors skip the retries)", () => {
  it("is true for the request's own 4xx faults, false for passing ones", () => {
    for (const code of ["invalid_request", "not_found", "payload_too_large", "forbidden"] as const) {
      expect(failsEveryTime(new NestError(code, "x")), code).toBe(true);
    }
    for (const code of [
      "upstream_unavailable",
      "at_capacity",
      "internal",
      "model_not_prepared",
      "queue_unavailable",
      "rate_limited",
      "cancelled",
    ] as const) {
      expect(failsEveryTime(new NestError(code, "x")), code).toBe(false);
    }
  });
});
