/**
 * Package boundaries (issue 11), checked by `npm run lint` (`depcruise`):
 *   shared ← corpus ← edge | gpu-worker ← cli
 * shared imports nothing of ours; corpus only shared; edge and gpu-worker never import each other;
 * library packages never import the CLI. Imports are by package name (`@nest/<pkg>/<path>`),
 * resolved through the npm workspaces, so the rules match resolved paths.
 */
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: "shared-imports-nothing-of-ours",
      comment: "shared (protocol, retrieval contract, config schemas) is the bottom layer and Worker-safe.",
      severity: "error",
      from: { path: "^shared/src" },
      to: { path: "^(corpus|edge|gpu-worker|cli)/" },
    },
    {
      name: "corpus-only-on-shared",
      comment: "corpus (corpora on disk) sits on shared only.",
      severity: "error",
      from: { path: "^corpus/src" },
      to: { path: "^(edge|gpu-worker|cli)/" },
    },
    {
      name: "gpu-worker-not-edge",
      comment: "gpu-worker and edge are siblings: what both need lives in shared or corpus.",
      severity: "error",
      from: { path: "^gpu-worker/src" },
      to: { path: "^edge/" },
    },
    {
      name: "edge-not-gpu-worker",
      severity: "error",
      from: { path: "^edge/src" },
      to: { path: "^gpu-worker/" },
    },
    {
      name: "library-not-cli",
      comment: "the CLI is on top: no library package imports it.",
      severity: "error",
      from: { path: "^(shared|corpus|edge|gpu-worker)/src" },
      to: { path: "^cli/" },
    },
    {
      name: "workers-bundle-node-free",
      comment: "the Workers bundle (edge/src except adapters/node) must not reach Node-only packages.",
      severity: "error",
      from: { path: "^edge/src", pathNot: "^edge/src/adapters/node/" },
      to: { path: "^(corpus/|node_modules/(@lancedb|onnxruntime-node|ioredis|@hono/node-server)/)" },
    },
    {
      name: "worker-safe-no-node-builtins",
      comment: "shared and the Workers part of edge run on Cloudflare Workers: no node: modules.",
      severity: "error",
      from: { path: "^(shared/src|edge/src)", pathNot: "^edge/src/adapters/node/" },
      to: { dependencyTypes: ["core"] },
    },
    {
      name: "no-circular",
      comment: "import cycles of values (type-only imports may cycle: they vanish at run time)",
      severity: "warn",
      from: {},
      to: { circular: true, viaOnly: { dependencyTypesNot: ["type-only"] } },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    enhancedResolveOptions: {
      exportsFields: ["exports"],
      conditionNames: ["import", "require", "node", "default", "types"],
      extensions: [".ts", ".mjs", ".js", ".json"],
    },
    reporterOptions: { text: { highlightFocused: true } },
  },
};
