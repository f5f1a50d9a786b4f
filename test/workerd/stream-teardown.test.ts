/**
 * Issue 17 inside workerd: stopping a stream early leaves no unhandled rejection. The edge reads a
 * gpu-worker decode stream and stops at `done` (it does not wait for the body's end); a client
 * leaves an SSE answer after its first bytes. Before the fix, reading the decode body through
 * `pipeThrough(TextDecoderStream).pipeThrough(EventSourceParserStream)` and cancelling it leaked
 * one `Error: undefined` rejection per stream (8 of 8 in a probe; the suite's intermittent
 * failure). Vitest fails the run on any unhandled rejection; the tests count them too.
 */
import { env, exports } from "cloudflare:workers";
import { afterAll, describe, expect, it } from "vitest";
import { GenerateRequestSchema } from "@nest/shared/protocol/request";
import { readGenerateEvents } from "@nest/edge/route/read-sse";
import { signedFetch } from "@nest/edge/route/signed-fetch";

/** workerd's global `unhandledrejection` event (not in the Node typings the repo's tsconfig uses). */
const scope = globalThis as unknown as {
  addEventListener(type: "unhandledrejection", fn: (e: { reason: unknown }) => void): void;
  removeEventListener(type: "unhandledrejection", fn: (e: { reason: unknown }) => void): void;
};
const unhandled: unknown[] = [];
const onUnhandled = (e: { reason: unknown }) => unhandled.push(e.reason);
scope.addEventListener("unhandledrejection", onUnhandled);
afterAll(() => scope.removeEventListener("unhandledrejection", onUnhandled));

/** Rejections surface after the microtask checkpoint of the failing cancel: wait a little. */
const settle = () => new Promise((r) => setTimeout(r, 200));

async function decodeBody(): Promise<ReadableStream<Uint8Array>> {
  const request = GenerateRequestSchema.parse({
    prompt: `What is the capital of Australia? ${crypto.randomUUID()}`,
    mode: "base",
    max_new_tokens: 3,
  });
  const res = await signedFetch(env.NEST_POOL_SECRET)(`${env.NEST_POOL_URL}/v1/decode`, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "text/event-stream" },
    body: JSON.stringify({ request, passages: [] }),
  });
  expect(res.status).toBe(200);
  return res.body!;
}

describe("stopping a stream early leaves no unhandled rejection", () => {
  it("reading a gpu-worker decode stream up to `done` and stopping there, 4 times", async () => {
    const before = unhandled.length;
    for (let i = 0; i < 4; i++) {
      const names: string[] = [];
      for await (const ev of readGenerateEvents(await decodeBody(), () => {})) {
        names.push(ev.event);
        if (ev.event === "done") break;
      }
      expect(names.at(-1)).toBe("done");
    }
    await settle();
    expect(unhandled.slice(before)).toEqual([]);
  });

  it("a client that cancels /v1/generate's SSE answer after the first bytes", async () => {
    const before = unhandled.length;
    const res = await exports.default.fetch("https://edge.test/v1/generate", {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer workerd-static-key" },
      body: JSON.stringify({ prompt: `What is the capital of Australia? ${crypto.randomUUID()}`, mode: "base", max_new_tokens: 24 }),
    });
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    const first = await reader.read();
    expect(new TextDecoder().decode(first.value)).toContain("event: retrieval");
    await reader.cancel(new Error("test client leaves"));
    await settle();
    expect(unhandled.slice(before)).toEqual([]);
  });
});
