/**
 * @module engine/prompt
 * Prompts per mode (nest-algorithm.md §8, adapted to a chat model): the question as the user
 * message; `rag` and `rag-nest` put the top-3 passages in it as background (spec §9).
 */
import type { Passage } from "@nest/shared/protocol/passage";
import type { GenerateRequest, Message } from "@nest/shared/protocol/request";

/** Passages placed in the prompt by `rag` / `rag-nest` (spec §9: top-3). */
export const RAG_PASSAGES = 3;

/**
 * The chat messages for a request. Their contents (the user's text, the background passages) are
 * tokenised as plain text (`ModelTokenizer.encodeChat`): a `<|im_end|>` in a passage or a question
 * is characters, never a turn boundary. For `rag` / `rag-nest` the last user message becomes
 * `Answer the question with the background context as reference.\nBackground:\n{passages}\nQuestion: {q}`.
 */
export function buildMessages(req: Pick<GenerateRequest, "prompt" | "messages" | "mode">, passages: readonly Passage[]): Message[] {
  const messages: Message[] = req.messages ? req.messages.map((m) => ({ ...m })) : [{ role: "user", content: req.prompt ?? "" }];
  if (req.mode !== "rag" && req.mode !== "rag-nest") return messages;
  const background = passages
    .slice(0, RAG_PASSAGES)
    .map((p) => p.text)
    .join("\n");
  if (background.length === 0) return messages;
  let last = -1;
  messages.forEach((m, i) => {
    if (m.role === "user") last = i;
  });
  if (last < 0) return messages;
  const q = messages[last]!.content;
  messages[last] = {
    role: "user",
    content: `Answer the question with the background context as reference.\nBackground:\n${background}\nQuestion: ${q}`,
  };
  return messages;
}
