"""Export a GGUF Llama-family model to an ONNX decoder with KV cache for nest.

Loads the GGUF with transformers (dequantised to float32), exports a thin wrapper with
``torch.onnx.export`` (TorchScript tracer first, dynamo exporter as fallback), writes the
tokenizer files and chat template, checks onnxruntime against PyTorch, and writes
``manifest.json`` last (its presence means the export is complete).

Graph contract (optimum / transformers.js layout plus one output):

  inputs   input_ids [batch, seq] int64, attention_mask [batch, past+seq] int64,
           position_ids [batch, seq] int64,
           past_key_values.{i}.key|value [batch, kv_heads, past, head_dim] float32
  outputs  logits [batch, seq, vocab] float32,
           hidden_states [batch, seq, hidden] float32: the residual stream entering the last
             decoder block, un-normalised (HF ``output_hidden_states[-2]``; nest-algorithm.md §2.1),
           present.{i}.key|value [batch, kv_heads, past+seq, head_dim] float32

Usage:
  python export.py --gguf PATH --out DIR --source-spec STR --key STR [--sha256 HEX]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import warnings

import numpy as np
import torch

ONNX_FILE = "model.onnx"
# Max |logit| difference between onnxruntime and PyTorch that we accept. Both run fp32 but sum in
# different orders (matmul blocking, softmax), which leaves ~1e-6 relative noise per op on logits of
# magnitude ~30 after 30 layers: measured 9.5e-5 (prefill) and 5.2e-5 (cached step) on
# SmolLM2-135M (see README). 1e-3 leaves ~10x headroom, while a real graph error (wrong mask,
# position or cache) moves logits by >= 0.1.
LOGIT_TOLERANCE = 1e-3
# The hidden state has outlier entries up to ~1e4 (Llama massive activations on the first token),
# so its tolerance is relative to the largest |entry|: measured ~2e-6 of it; accept 1e-4.
HIDDEN_REL_TOLERANCE = 1e-4

_T0 = time.time()


def step(msg: str) -> None:
    """Prints a progress line with the elapsed wall time, flushed."""
    print(f"[export {time.time() - _T0:6.1f}s] {msg}", flush=True)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class DecoderWrapper(torch.nn.Module):
    """Flat-tensor view of a HF causal LM: (ids, mask, positions, past k/v...) -> (logits, hidden, present k/v...)."""

    def __init__(self, model: torch.nn.Module, num_layers: int):
        super().__init__()
        self.model = model
        self.num_layers = num_layers
        self._captured: list[torch.Tensor] = []
        # Capture the input of the last decoder block = HF hidden_states[-2] (verified in parity()).
        last_block = model.model.layers[num_layers - 1]
        last_block.register_forward_pre_hook(self._capture, with_kwargs=True)

    def _capture(self, _module, args, kwargs):
        self._captured.append(args[0] if args else kwargs["hidden_states"])

    def forward(self, input_ids, attention_mask, position_ids, *past):
        from transformers.cache_utils import DynamicCache

        cache = DynamicCache(
            ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(self.num_layers)],
            config=self.model.config,
        )
        self._captured.clear()
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
            return_dict=True,
        )
        hidden = self._captured[-1]
        self._captured.clear()
        present = []
        for layer in out.past_key_values.layers:
            present += [layer.keys, layer.values]
        return (out.logits, hidden, *present)


def io_names(num_layers: int) -> tuple[list[str], list[str]]:
    inputs = ["input_ids", "attention_mask", "position_ids"]
    outputs = ["logits", "hidden_states"]
    for i in range(num_layers):
        inputs += [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
        outputs += [f"present.{i}.key", f"present.{i}.value"]
    return inputs, outputs


def make_inputs(ids: torch.Tensor, past: list[torch.Tensor], past_len: int) -> tuple[torch.Tensor, ...]:
    """Full-attention inputs for `ids` [batch, seq] continuing `past_len` cached positions."""
    batch, seq = ids.shape
    mask = torch.ones(batch, past_len + seq, dtype=torch.int64)
    pos = torch.arange(past_len, past_len + seq, dtype=torch.int64).unsqueeze(0).expand(batch, seq).contiguous()
    return (ids, mask, pos, *past)


def empty_past(cfg, batch: int, past_len: int = 0, seed: int | None = None) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    shape = (batch, cfg.num_key_value_heads, past_len, cfg.head_dim)
    return [torch.randn(shape, generator=gen) for _ in range(2 * cfg.num_hidden_layers)]


def export_onnx(wrapper: DecoderWrapper, cfg, path: str) -> str:
    """Exports `wrapper` to `path`; returns the exporter used ("torchscript" or "dynamo")."""
    n = cfg.num_hidden_layers
    in_names, out_names = io_names(n)
    # Trace with a non-empty past and seq != past so neither length is baked in as a constant.
    example = make_inputs(torch.randint(0, cfg.vocab_size, (2, 3)), empty_past(cfg, 2, 4, seed=0), 4)
    dyn = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "total_seq"},
           "position_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"},
           "hidden_states": {0: "batch", 1: "seq"}}
    for i in range(n):
        for kv in ("key", "value"):
            dyn[f"past_key_values.{i}.{kv}"] = {0: "batch", 2: "past_seq"}
            dyn[f"present.{i}.{kv}"] = {0: "batch", 2: "total_seq"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about python ints; parity() is the check
            torch.onnx.export(wrapper, example, path, input_names=in_names, output_names=out_names,
                              dynamic_axes=dyn, opset_version=18, dynamo=False, external_data=True)
        return "torchscript"
    except Exception as err:  # noqa: BLE001 - report and fall back
        step(f"TorchScript export failed ({type(err).__name__}: {err}); falling back to dynamo")
    from torch.export import Dim

    batch, seq, past = Dim("batch"), Dim("seq"), Dim("past_seq")
    shapes = [{0: batch, 1: seq}, {0: batch, 1: past + seq}, {0: batch, 1: seq}]
    shapes += [{0: batch, 2: past}] * (2 * n)
    prog = torch.onnx.export(wrapper, example, input_names=in_names, output_names=out_names,
                             dynamic_shapes=tuple(shapes), opset_version=18, dynamo=True)
    prog.save(path, external_data=True)
    return "dynamo"


def parity(model, wrapper: DecoderWrapper, tok, onnx_path: str, cfg) -> tuple[float, float]:
    """Compares onnxruntime with PyTorch on a chat prefill and one cached 5-token step.

    Returns (max |logit diff|, max |hidden diff| / max |hidden|) over both steps.
    """
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    in_names, out_names = io_names(cfg.num_hidden_layers)
    msgs = [{"role": "user", "content": "What is the capital of Australia?"}]
    text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    prompt = torch.tensor([tok(text)["input_ids"]], dtype=torch.int64)
    cont = torch.tensor([tok("The capital of Australia is", add_special_tokens=False)["input_ids"][:5]])
    assert cont.shape[1] == 5, cont.shape

    max_logit, max_hidden = 0.0, 0.0
    past = empty_past(cfg, 1, 0)
    past_len = 0
    for name, ids in (("prefill", prompt), ("cached step", cont)):
        inputs = make_inputs(ids, past, past_len)
        with torch.no_grad():
            ref = model(input_ids=inputs[0], attention_mask=inputs[1], position_ids=inputs[2],
                        past_key_values=_cache(past, cfg, model), use_cache=True,
                        output_hidden_states=True, return_dict=True)
            wrapped = wrapper(*inputs)
        ref_hidden = ref.hidden_states[-2]
        if not torch.equal(wrapped[1], ref_hidden):
            raise SystemExit("wrapper hidden state is not HF hidden_states[-2]")
        got = sess.run(out_names, {n: t.numpy() for n, t in zip(in_names, inputs)})
        d_logit = float(np.abs(got[0] - ref.logits.numpy()).max())
        d_hidden = float(np.abs(got[1] - ref_hidden.numpy()).max())
        d_present = max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got[2:], wrapped[2:]))
        step(f"parity {name}: {ids.shape[1]} tokens, past {past_len}: max|dlogit|={d_logit:.3e} "
             f"max|dhidden|={d_hidden:.3e} max|dpresent|={d_present:.3e} "
             f"(|logit|max={float(ref.logits.abs().max()):.1f}, |hidden|max={float(ref_hidden.abs().max()):.1f})")
        if int(got[0][0, -1].argmax()) != int(ref.logits[0, -1].argmax()):
            raise SystemExit(f"parity {name}: greedy next token differs")
        max_logit = max(max_logit, d_logit)
        max_hidden = max(max_hidden, d_hidden / float(ref_hidden.abs().max()))
        past = [torch.from_numpy(a) for a in got[2:]]
        past_len += ids.shape[1]
    return max_logit, max_hidden


def _cache(past, cfg, model):
    from transformers.cache_utils import DynamicCache

    if past[0].shape[2] == 0:
        return DynamicCache(config=model.config)
    pairs = [(past[2 * i].clone(), past[2 * i + 1].clone()) for i in range(cfg.num_hidden_layers)]
    return DynamicCache(ddp_cache_data=pairs, config=model.config)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", required=True, help="path to the .gguf weights")
    ap.add_argument("--out", required=True, help="output folder (created)")
    ap.add_argument("--source-spec", required=True, help="where the weights came from, e.g. a pip spec")
    ap.add_argument("--key", required=True, help="cache key of this export, stored in the manifest")
    ap.add_argument("--sha256", help="sha256 of the gguf (computed when omitted)")
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.makedirs(args.out, exist_ok=True)
    gguf_dir, gguf_file = os.path.split(os.path.abspath(args.gguf))
    sha = args.sha256 or sha256_file(args.gguf)
    torch.manual_seed(0)

    step(f"loading tokenizer and model from {gguf_file} (dequantising to float32)")
    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32,
                                                 attn_implementation="eager")
    model.eval()
    cfg = model.config
    n = cfg.num_hidden_layers
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    cfg.head_dim = head_dim
    step(f"loaded {type(model).__name__}: hidden {cfg.hidden_size}, {n} layers, "
         f"{cfg.num_attention_heads} heads / {cfg.num_key_value_heads} kv heads, head_dim {head_dim}, vocab {cfg.vocab_size}")

    wrapper = DecoderWrapper(model, n).eval()
    onnx_path = os.path.join(args.out, ONNX_FILE)
    step("exporting ONNX (torch.onnx.export)")
    with torch.no_grad():
        exporter = export_onnx(wrapper, cfg, onnx_path)
    size_mb = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out)) / 1e6
    step(f"exported with {exporter} exporter: {size_mb:.0f} MB in {args.out}")

    step("writing tokenizer files and chat template")
    tok.save_pretrained(args.out)
    chat_template = tok.chat_template
    if not isinstance(chat_template, str) or not chat_template:
        raise SystemExit("tokenizer has no chat template")
    with open(os.path.join(args.out, "chat_template.jinja"), "w", encoding="utf8") as f:
        f.write(chat_template)

    step("parity check: onnxruntime vs PyTorch")
    d_logit, d_hidden = parity(model, wrapper, tok, onnx_path, cfg)
    if d_logit > LOGIT_TOLERANCE or d_hidden > HIDDEN_REL_TOLERANCE:
        print(f"parity FAILED: max|dlogit|={d_logit:.3e} (tol {LOGIT_TOLERANCE}), "
              f"max|dhidden|/max|hidden|={d_hidden:.3e} (tol {HIDDEN_REL_TOLERANCE})", file=sys.stderr, flush=True)
        return 1

    eos = cfg.eos_token_id if cfg.eos_token_id is not None else tok.eos_token_id
    eos = eos if isinstance(eos, list) else [eos]
    manifest = {
        "format": "nest-onnx-decoder/1",
        "name": gguf_file.split(".")[0],  # SmolLM2-135M-Instruct.Q4_1.gguf -> SmolLM2-135M-Instruct
        "architecture": type(model).__name__,
        "source": {"spec": args.source_spec, "file": gguf_file, "sha256": sha, "key": args.key},
        "onnx": ONNX_FILE,
        "dtype": "float32",
        "hidden_size": cfg.hidden_size,
        "num_layers": n,
        "num_attention_heads": cfg.num_attention_heads,
        "num_kv_heads": cfg.num_key_value_heads,
        "head_dim": head_dim,
        "vocab_size": cfg.vocab_size,
        "bos_token_id": tok.bos_token_id,
        "eos_token_ids": [int(e) for e in eos],
        "pad_token_id": tok.pad_token_id,
        "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask", "position_ids": "position_ids",
                   "past_key": "past_key_values.{i}.key", "past_value": "past_key_values.{i}.value"},
        "outputs": {"logits": "logits", "hidden_states": "hidden_states",
                    "present_key": "present.{i}.key", "present_value": "present.{i}.value"},
        "knn_hidden": {
            "layer": n - 1,
            "description": f"residual stream entering decoder block {n - 1} (the last of {n}, 0-based), "
                           "before its input RMSNorm; = HF output_hidden_states[-2], un-normalised "
                           "(NEST repo choice, nest-algorithm.md §2.1)",
        },
        "tokenizer": "tokenizer.json",
        "tokenizer_config": "tokenizer_config.json",
        "chat_template": chat_template,
        "parity": {"max_abs_logit_diff": d_logit, "tolerance": LOGIT_TOLERANCE},
    }
    tmp = os.path.join(args.out, "manifest.json.tmp")
    with open(tmp, "w", encoding="utf8") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    os.replace(tmp, os.path.join(args.out, "manifest.json"))
    step(f"done: manifest.json written (max|dlogit|={d_logit:.3e}, max|dhidden|/max|hidden|={d_hidden:.3e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
