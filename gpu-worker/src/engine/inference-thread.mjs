// Bootstrap of the inference worker thread: plain ESM that registers tsx, then loads the TypeScript
// entry. Worker threads do not inherit the parent's module hooks.
import { register } from "tsx/esm/api";

register();
await import("./inference-thread.ts");
