"""Add a lower-precision variant of an exported nest decoder, parity-checked against fp32.

  int8  8-bit block-wise weights in MatMulNBits nodes (onnxruntime's MatMulNBitsQuantizer, block 32,
        asymmetric, accuracy level 4). quantize_dynamic's per-tensor activation quantisation was
        tried first and agreed with fp32 on only 36% of greedy tokens: the residual stream's
        massive activations (|x| ~ 1e4 at the first position) wreck a per-tensor scale.
  int4  4-bit block-wise weights in MatMulNBits nodes (same settings, 4 bits)
  fp16  float16 weights and activations with float32 graph inputs/outputs
        (onnxruntime.transformers.float16; meant for GPUs, CPU kernels are slow)

Parity against the fp32 graph (both through onnxruntime on the CPU): max |logit difference| on a
chat prefill, and greedy agreement: 20 fixed prompts decoded greedily for 16 tokens by both, the
share of generated tokens that agree position by position (a prompt counts up to its first
divergence, after which the contexts differ). The result is recorded in the manifest under
``precisions.<name>`` and the manifest is rewritten atomically.

Usage: python quantize.py --model-dir DIR --precision int8|int4|fp16 [--min-agreement 0.5]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

PROMPTS = [
    "What is the capital of Australia?", "When did Brazil become independent?",
    "What is the highest point in Nepal?", "What are the national symbols of Canada?",
    "What is the population of France?", "Which languages are spoken in Belgium?",
    "What is the climate of Kenya like?", "What is the currency of Japan?",
    "Where is Kiribati located?", "What are the main industries of Chile?",
    "Who is the chief of state of Norway?", "What is the area of Egypt?",
    "What natural resources does Peru have?", "What is the capital of Austria?",
    "Describe the terrain of Iceland.", "What is the official religion of Thailand?",
    "Write one sentence about the ocean.", "List three colours.",
    "What is two plus two?", "Complete: The quick brown fox",
]
NEW_TOKENS = 16
# Block of 32 weights along K per scale / zero point (the GGUF Q4_1 block size).
BLOCK = 32
# MatMulNBits accuracy level 4: int8 activations per block and int8 dot products. Measured on the
# 2-core machine (loaded): fp32 5.8 tok/s, int8 at the default level 1.0 tok/s, at level 4 13.2 tok/s.
ACCURACY_LEVEL = 4
_T0 = time.time()


def step(msg: str) -> None:
    print(f"[quantize {time.time() - _T0:6.1f}s] {msg}", flush=True)


class Runner:
    """Greedy decoding with KV cache through one onnxruntime session of the nest graph."""

    def __init__(self, path: str, manifest: dict):
        import onnxruntime as ort

        self.sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.m = manifest
        self.outputs = [o.name for o in self.sess.get_outputs()]

    def forward(self, ids: list[int], past: list[np.ndarray], keep: int = 1):
        m = self.m
        past_len = past[0].shape[1]
        feeds = {
            "input_ids": np.array([ids], dtype=np.int64),
            "attention_mask": np.ones((1, past_len + len(ids)), dtype=np.int64),
            "position_ids": np.arange(past_len, past_len + len(ids), dtype=np.int64)[None],
            "num_logits_to_keep": np.array(keep, dtype=np.int64),
        }
        for i in range(m["num_layers"]):
            feeds[f"past_key_values.{i}.key"] = past[2 * i]
            feeds[f"past_key_values.{i}.value"] = past[2 * i + 1]
        out = dict(zip(self.outputs, self.sess.run(self.outputs, feeds)))
        present = []  # the graph returns the new positions only: append them (sequence-major)
        for i in range(m["num_layers"]):
            present += [np.concatenate([past[2 * i], out[f"present.{i}.key"]], axis=1),
                        np.concatenate([past[2 * i + 1], out[f"present.{i}.value"]], axis=1)]
        return out["logits"], present

    def empty(self) -> list[np.ndarray]:
        shape = (1, 0, self.m["num_kv_heads"], self.m["head_dim"])
        return [np.zeros(shape, dtype=np.float32) for _ in range(2 * self.m["num_layers"])]

    def greedy(self, prompt: list[int]) -> tuple[list[int], np.ndarray]:
        logits, past = self.forward(prompt, self.empty())
        first = logits[0, -1].copy()
        out: list[int] = []
        for _ in range(NEW_TOKENS):
            t = int(logits[0, -1].argmax())
            out.append(t)
            if t in self.m["eos_token_ids"]:
                break
            logits, past = self.forward([t], past)
        return out, first


def quantize(src: str, dst: str, precision: str) -> None:
    if precision in ("int8", "int4"):
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        q = MatMulNBitsQuantizer(onnx.load(src), bits=8 if precision == "int8" else 4, block_size=BLOCK,
                                 is_symmetric=False, accuracy_level=ACCURACY_LEVEL)
        q.process()
        q.model.save_model_to_file(dst, use_external_data_format=False)
    elif precision == "fp16":
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(src), keep_io_types=True)
        onnx.save_model(model, dst, save_as_external_data=True, location=os.path.basename(dst) + ".data")
    else:
        raise SystemExit(f"unknown precision {precision}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--precision", required=True, choices=["int8", "int4", "fp16"])
    ap.add_argument("--min-agreement", type=float, default=0.5,
                    help="fail below this greedy agreement with fp32 (share of generated tokens)")
    args = ap.parse_args()

    from transformers import AutoTokenizer

    path = os.path.join(args.model_dir, "manifest.json")
    with open(path, encoding="utf8") as f:
        manifest = json.load(f)
    src = os.path.join(args.model_dir, manifest["onnx"])
    name = f"model.{args.precision}.onnx"
    dst = os.path.join(args.model_dir, name)
    step(f"quantising {src} to {args.precision}")
    quantize(src, dst + ".tmp.onnx", args.precision)
    for f in os.listdir(args.model_dir):
        if f.startswith(name + ".tmp.onnx") and f != name + ".tmp.onnx":
            os.replace(os.path.join(args.model_dir, f), os.path.join(args.model_dir, f.replace(".tmp.onnx", "")))
    os.replace(dst + ".tmp.onnx", dst)
    size_mb = os.path.getsize(dst) / 1e6 + sum(
        os.path.getsize(os.path.join(args.model_dir, f)) / 1e6 for f in os.listdir(args.model_dir)
        if f.startswith(name + ".data"))
    step(f"wrote {name} ({size_mb:.0f} MB)")

    tok = AutoTokenizer.from_pretrained(args.model_dir)
    max_logit, agreement, same_outputs = greedy_parity(Runner(src, manifest), Runner(dst, manifest), tok, manifest,
                                                       args.precision)
    if agreement < args.min_agreement:
        print(f"parity FAILED: greedy agreement {agreement:.3f} < {args.min_agreement}", file=sys.stderr)
        return 1
    manifest.setdefault("precisions", {})[args.precision] = {
        "onnx": name, "max_abs_logit_diff": max_logit, "greedy_agreement": agreement,
        "identical_outputs": same_outputs, "prompts": len(PROMPTS), "reference": "onnxruntime fp32",
    }
    write_manifest(path, manifest)
    return 0


def greedy_parity(ref, low, tok, manifest: dict, label: str) -> tuple[float, float, int]:
    """`low` against `ref` (objects with ``greedy(ids) -> (tokens, first logits)``) over PROMPTS as
    chat prompts: (max |logit difference| on the prefill, greedy token agreement, identical outputs)."""
    from jinja2 import Template  # transformers' own dependency

    template = Template(manifest["chat_template"])
    agree = total = same = 0
    max_logit = 0.0
    for i, q in enumerate(PROMPTS):
        text = template.render(messages=[{"role": "user", "content": q}], add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        a, la = ref.greedy(ids)
        b, lb = low.greedy(ids)
        max_logit = max(max_logit, float(np.abs(la - lb).max()))
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        agree += n
        total += len(a)
        same += int(a == b)
        if i == 0:
            step(f"'{q}': fp32 {tok.decode(a)!r} / {label} {tok.decode(b)!r}")
    agreement = agree / max(total, 1)
    step(f"{label} vs fp32 over {len(PROMPTS)} prompts: max|dlogit| (prefill) = {max_logit:.3g}, "
         f"greedy token agreement = {agreement:.3f}, identical outputs = {same}/{len(PROMPTS)}")
    return max_logit, agreement, same


def write_manifest(path: str, manifest: dict) -> None:
    """Rewrites manifest.json atomically (a temporary file renamed over it)."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf8") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    step("manifest updated")


if __name__ == "__main__":
    sys.exit(main())
