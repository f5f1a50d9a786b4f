/**
 * @module env
 * The Hono environment of the edge app: what middleware leaves on the context for the handlers.
 * (Settings are parsed before the app is built and handed to it as `AppDeps`; the app reads no
 * bindings through `c.env`.) Worker-safe.
 */
import type { AuthedKey } from "./middleware/keys.ts";

export interface EdgeEnv {
  Variables: {
    /** The API key `keyAuth` accepted (absent on routes without it). */
    apiKey?: AuthedKey;
  };
}
