/**
 * infra/export-onnx/gguf_variants.py (issue 13, the runtime bench's llama.cpp on the same weights):
 * the F32 rewrite of the served Q4_1 GGUF holds exactly the dequantised weights (the fp32 graph's),
 * the Q8_0 rewrite holds them to within half a Q8_0 step, the tied token_embd (already Q8_0) is
 * copied byte for byte, and every metadata field but `general.file_type` is carried over. The
 * files are read back with gguf-py, the library llama.cpp's own converters use.
 */
import { spawnSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { DEFAULT_MODEL, EXPORTER_DIR } from "@nest/gpu-worker/config";
import { prepareExporterPython, prepareModel } from "@nest/gpu-worker/runtime/prepare-model";
import { cachePaths } from "@nest/corpus/home";

let python: string;
let root: string;

/** Compares `src` with its rewrite `out` of type `kind`; prints one JSON line of findings. */
const CHECK = `
import json, sys
import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
src, out, kind = sys.argv[1:4]
a, b = gguf.GGUFReader(src), gguf.GGUFReader(out)
fa = {f.name: f.contents() for f in a.fields.values() if not f.name.startswith("GGUF.")}
fb = {f.name: f.contents() for f in b.fields.values() if not f.name.startswith("GGUF.")}
res = {"fields_differing": sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k)),
       "file_type": fb.get("general.file_type"), "tensors": len(b.tensors),
       "same_names": [t.name for t in a.tensors] == [t.name for t in b.tensors], "types": {}, "worst_step_ratio": 0.0,
       "max_abs_diff_f32": 0.0, "token_embd_bytes_equal": None}
for ta, tb in zip(a.tensors, b.tensors):
    res["types"][tb.tensor_type.name] = res["types"].get(tb.tensor_type.name, 0) + 1
    wa = gguf.quants.dequantize(np.asarray(ta.data), ta.tensor_type).astype(np.float32)
    wb = gguf.quants.dequantize(np.asarray(tb.data), tb.tensor_type).astype(np.float32)
    assert wa.shape == wb.shape, ta.name
    if ta.name == "token_embd.weight" and kind == "q8_0":
        res["token_embd_bytes_equal"] = bool(np.array_equal(np.asarray(ta.data), np.asarray(tb.data)))
    if kind == "f32":
        res["max_abs_diff_f32"] = max(res["max_abs_diff_f32"], float(np.abs(wa - wb).max()))
    elif tb.tensor_type == Q.Q8_0:
        blocks = wa.reshape(-1, 32)
        step = np.abs(blocks).max(axis=1, keepdims=True) / 127.0  # Q8_0: d = amax / 127
        err = np.abs(blocks - wb.reshape(-1, 32))
        ratio = float((err / np.maximum(step, 1e-30)).max())
        res["worst_step_ratio"] = max(res["worst_step_ratio"], ratio)
print(json.dumps(res))
`;

function py(args: string[]): string {
  const r = spawnSync(python, args, { encoding: "utf8", maxBuffer: 1 << 24 });
  if (r.error) throw new Error(`${python} could not start: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${args[0]} failed:\n${`${r.stdout}${r.stderr}`.split("\n").slice(-15).join("\n")}`);
  return r.stdout;
}

beforeAll(async () => {
  await prepareModel({ log: () => {} }); // the GGUF download lies in $NEST_HOME/downloads
  python = await prepareExporterPython({ log: () => {} });
  root = await mkdtemp(join(tmpdir(), "nest-gguf-"));
}, 600_000);

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

const src = () => join(cachePaths().downloads, DEFAULT_MODEL.ggufFile);

function rewrite(kind: "f32" | "q8_0") {
  const out = join(root, `model.${kind}.gguf`);
  py([join(EXPORTER_DIR, "gguf_variants.py"), "--gguf", src(), "--type", kind, "--out", out]);
  const r = JSON.parse(py(["-c", CHECK, src(), out, kind]).trim().split("\n").at(-1)!);
  return r as {
    fields_differing: string[];
    file_type: number;
    tensors: number;
    same_names: boolean;
    types: Record<string, number>;
    worst_step_ratio: number;
    max_abs_diff_f32: number;
    token_embd_bytes_equal: boolean | null;
  };
}

it("f32: every tensor is the Q4_1 file dequantised, bit for bit; metadata carried over", () => {
  const r = rewrite("f32");
  expect(r.fields_differing).toEqual(["general.file_type"]);
  expect(r.file_type).toBe(0); // LLAMA_FTYPE_ALL_F32
  expect(r.same_names).toBe(true);
  expect(r.tensors).toBe(272); // SmolLM2-135M: 30 blocks × 9 + token_embd + output_norm
  expect(r.types).toEqual({ F32: 272 });
  expect(r.max_abs_diff_f32).toBe(0);
}, 300_000);

it("q8_0: the weights to within half a Q8_0 step, token_embd copied, norms kept float32", () => {
  const r = rewrite("q8_0");
  expect(r.fields_differing).toEqual(["general.file_type"]);
  expect(r.file_type).toBe(7); // LLAMA_FTYPE_MOSTLY_Q8_0
  expect(r.same_names).toBe(true);
  // 7 matrices per block + token_embd as Q8_0; 2 norms per block + output_norm stay float32
  expect(r.types).toEqual({ Q8_0: 211, F32: 61 });
  expect(r.token_embd_bytes_equal).toBe(true);
  // round to nearest on a grid of step d = amax/127: |error| ≤ d/2, plus up to 127·|d − fp16(d)|
  // ≤ 127·2⁻¹¹·d = 0.062·d from the scale's storage in fp16
  expect(r.worst_step_ratio).toBeLessThanOrEqual(0.57);
  expect(r.worst_step_ratio).toBeGreaterThan(0.3);
}, 300_000);
