#!/usr/bin/env node
// Runs `npm install` (with ONNXRUNTIME_NODE_INSTALL=skip: its postinstall would try to download CUDA
// libraries) when node_modules is missing or package-lock.json is newer than npm's record of the
// last install (node_modules/.package-lock.json). Plain Node, no dependencies; instant otherwise.
import { spawnSync } from "node:child_process";
import { statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const mtime = (p) => {
  try {
    return statSync(join(root, p)).mtimeMs;
  } catch {
    return undefined;
  }
};

const lock = mtime("package-lock.json");
const installed = mtime("node_modules/.package-lock.json");
const reason =
  mtime("node_modules") === undefined
    ? "node_modules is missing"
    : installed === undefined
      ? "node_modules/.package-lock.json is missing"
      : lock !== undefined && lock > installed
        ? "package-lock.json changed since the last install"
        : undefined;

if (reason) {
  console.error(`ensure-install: ${reason}; running npm install`);
  const npm = process.platform === "win32" ? "npm.cmd" : "npm";
  const r = spawnSync(npm, ["install", "--no-audit", "--no-fund"], {
    cwd: root,
    stdio: "inherit",
    env: { ...process.env, ONNXRUNTIME_NODE_INSTALL: "skip" },
  });
  if (r.error) {
    console.error(`ensure-install: cannot run npm: ${r.error.message}`);
    process.exit(1);
  }
  if (r.status !== 0) process.exit(r.status ?? 1);
}
