#!/usr/bin/env node
// nestlm: the nest command line. Registers tsx (TypeScript at run time, no build step), then runs
// cli/src/main.ts.
import { register } from "tsx/esm/api";

register();
const { main } = await import(new URL("../cli/src/main.ts", import.meta.url).href);
await main(process.argv);
