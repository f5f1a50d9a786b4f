import { describe, expect, it } from "vitest";
import { OpenAiParamError, parseChatRequest, parseCompletionRequest } from "@nest/edge/routes/openai-schema";

function paramOf(f: () => unknown): { param: string | null; message: string } {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(OpenAiParamError);
    return { param: (e as OpenAiParamError).param, message: (e as OpenAiParamError).message };
  }
  throw new Error("expected an OpenAiParamError");
}

describe("OpenAI request mapping: errors name the client's field", () => {
  const messages = [{ role: "user", content: "What is the capital of Nepal?" }];

  it("a `nest` field is named under `nest.`", () => {
    const both = paramOf(() =>
      parseChatRequest({
        model: "nest",
        messages,
        nest: { documents: [{ id: "d", text: "Kathmandu is the capital." }], corpus: "factbook" },
      }),
    );
    expect(both.param).toBe("nest.corpus");
    expect(both.message).toMatch(/^field `nest\.corpus`: /);
    expect(paramOf(() => parseCompletionRequest({ model: "nest", prompt: "hi", nest: { k: 0 } })).param).toBe("nest.k");
  });

  it("`max_tokens` and the prompt keep their own names", () => {
    expect(paramOf(() => parseCompletionRequest({ model: "nest", prompt: "hi", max_tokens: 100_000 })).param).toBe("max_tokens");
    expect(paramOf(() => parseCompletionRequest({ model: "nest", prompt: "   " })).param).toBe("prompt");
    // An unknown field is named itself, at the top level and inside `nest`.
    expect(paramOf(() => parseCompletionRequest({ model: "nest", prompt: "hi", store_passages: 1 })).param).toBe("store_passages");
    expect(paramOf(() => parseCompletionRequest({ model: "nest", prompt: "hi", nest: { foo: 1 } })).param).toBe("nest.foo");
  });
});
