"""Export a causal LM to an ONNX decoder with KV cache for nest.

Sources (exactly one): a GGUF file (``--gguf``, dequantised to float32 by transformers), a local
Hugging Face folder (``--hf-dir``) or a model id (``--model-id``, downloaded by transformers from
the hub; not reachable from our CI network, but the path is the standard one). Families: any
``AutoModelForCausalLM`` whose decoder blocks sit at ``model.model.layers`` (Llama, Mistral, Qwen2,
...) or ``model.transformer.h`` (GPT-2).

Exports a thin wrapper with ``torch.onnx.export`` (TorchScript tracer first, dynamo exporter as
fallback), writes the tokenizer files and chat template, checks onnxruntime against PyTorch, and
writes ``manifest.json`` last (its presence means the export is complete). Quantised variants are
added afterwards by ``quantize.py``.

Graph contract (optimum / transformers.js names, with an append-only KV cache):

  inputs   input_ids [batch, seq] int64, attention_mask [batch, past+seq] int64,
           position_ids [batch, seq] int64,
           num_logits_to_keep [] int64: logits are computed for the last n positions only
             (0 for passage encoding, 1 for a prompt prefill, m for a draft of m tokens),
           past_key_values.{i}.key|value [batch, past, kv_heads, head_dim] float32
  outputs  logits [batch, n, vocab] float32,
           hidden_states [batch, seq, hidden] float32: the residual stream entering the last
             decoder block, un-normalised (HF ``output_hidden_states[-2]``; nest-algorithm.md §2.1),
           present.{i}.key|value [batch, seq, kv_heads, head_dim] float32: the NEW positions only

The KV cache is laid out sequence-major ([batch, seq, heads, dim], transposed inside the graph)
and the graph returns only the positions it adds, so the runtime keeps one growing buffer per
layer: the first `past` positions of it are the next pass's input as they are (no copy), each pass
appends `seq` positions, and cutting the cache after a rejected draft is a length change. Bytes
leaving the session per pass no longer grow with the context.

Usage:
  python export.py (--gguf PATH | --hf-dir DIR | --model-id ID) --out DIR --source-spec STR --key STR
                   [--sha256 HEX] [--name NAME]
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
# Used when the tokenizer has none (GPT-2 family): plain "role: content" turns.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)

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


def decoder_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder blocks of a causal LM (Llama/Mistral/Qwen2 layout or GPT-2 layout)."""
    base = model.base_model
    for attr in ("layers", "h"):
        blocks = getattr(base, attr, None)
        if isinstance(blocks, torch.nn.ModuleList):
            return blocks
    raise SystemExit(f"unsupported architecture {type(model).__name__}: no decoder blocks at .layers or .h")


class DecoderWrapper(torch.nn.Module):
    """Flat-tensor view of a HF causal LM:
    (ids, mask, positions, num_logits_to_keep, past k/v...) -> (logits, hidden, present k/v...)."""

    def __init__(self, model: torch.nn.Module, num_layers: int):
        super().__init__()
        self.model = model
        self.num_layers = num_layers
        self._captured: list[torch.Tensor] = []
        # Capture the input of the last decoder block = HF hidden_states[-2] (verified in parity()).
        decoder_blocks(model)[num_layers - 1].register_forward_pre_hook(self._capture, with_kwargs=True)

    def _capture(self, _module, args, kwargs):
        self._captured.append(args[0] if args else kwargs["hidden_states"])

    def forward(self, input_ids, attention_mask, position_ids, num_logits_to_keep, *past):
        from transformers.cache_utils import DynamicCache

        # past: [batch, past, heads, dim] (sequence-major) -> HF's [batch, heads, past, dim]
        cache = DynamicCache(
            ddp_cache_data=[(past[2 * i].transpose(1, 2), past[2 * i + 1].transpose(1, 2)) for i in range(self.num_layers)],
            config=self.model.config,
        )
        self._captured.clear()
        out = self.model.base_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
            return_dict=True,
        )
        final = out.last_hidden_state
        seq = final.shape[1]
        keep = torch.arange(seq - num_logits_to_keep, seq, dtype=torch.int64)
        logits = self.model.get_output_embeddings()(final.index_select(1, keep))
        hidden = self._captured[-1]
        self._captured.clear()
        present = []
        for layer in out.past_key_values.layers:
            total = layer.keys.shape[2]
            # only the positions this pass added, sequence-major
            present += [layer.keys[:, :, total - seq:].transpose(1, 2), layer.values[:, :, total - seq:].transpose(1, 2)]
        return (logits, hidden, *present)


def io_names(num_layers: int) -> tuple[list[str], list[str]]:
    inputs = ["input_ids", "attention_mask", "position_ids", "num_logits_to_keep"]
    outputs = ["logits", "hidden_states"]
    for i in range(num_layers):
        inputs += [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
        outputs += [f"present.{i}.key", f"present.{i}.value"]
    return inputs, outputs


def make_inputs(ids: torch.Tensor, past: list[torch.Tensor], past_len: int, keep: int | None = None) -> tuple[torch.Tensor, ...]:
    """Full-attention inputs for `ids` [batch, seq] continuing `past_len` cached positions."""
    batch, seq = ids.shape
    mask = torch.ones(batch, past_len + seq, dtype=torch.int64)
    pos = torch.arange(past_len, past_len + seq, dtype=torch.int64).unsqueeze(0).expand(batch, seq).contiguous()
    n = torch.tensor(seq if keep is None else keep, dtype=torch.int64)
    return (ids, mask, pos, n, *past)


def empty_past(cfg, batch: int, past_len: int = 0, seed: int | None = None) -> list[torch.Tensor]:
    """Sequence-major past key/values [batch, past_len, kv_heads, head_dim]."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    shape = (batch, past_len, cfg.num_key_value_heads, cfg.head_dim)
    return [torch.randn(shape, generator=gen) for _ in range(2 * cfg.num_hidden_layers)]


def export_onnx(wrapper: DecoderWrapper, cfg, path: str) -> str:
    """Exports `wrapper` to `path`; returns the exporter used ("torchscript" or "dynamo")."""
    n = cfg.num_hidden_layers
    in_names, out_names = io_names(n)
    # Trace with a non-empty past, seq != past and keep != seq so no length is baked in as a constant.
    example = make_inputs(torch.randint(0, cfg.vocab_size, (2, 3)), empty_past(cfg, 2, 4, seed=0), 4, keep=2)
    dyn = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "total_seq"},
           "position_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "kept_seq"},
           "hidden_states": {0: "batch", 1: "seq"}}
    for i in range(n):
        for kv in ("key", "value"):
            dyn[f"past_key_values.{i}.{kv}"] = {0: "batch", 1: "past_seq"}
            dyn[f"present.{i}.{kv}"] = {0: "batch", 1: "seq"}
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
    shapes = [{0: batch, 1: seq}, {0: batch, 1: past + seq}, {0: batch, 1: seq}, {}]
    shapes += [{0: batch, 1: past}] * (2 * n)
    prog = torch.onnx.export(wrapper, example, input_names=in_names, output_names=out_names,
                             dynamic_shapes=tuple(shapes), opset_version=18, dynamo=True)
    prog.save(path, external_data=True)
    return "dynamo"


def chat_prompt(tok, template: str, question: str) -> list[int]:
    """Token ids of `question` as a one-turn chat prompt (template from the manifest)."""
    msgs = [{"role": "user", "content": question}]
    text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False, chat_template=template)
    return tok(text, add_special_tokens=False)["input_ids"]


def parity(model, wrapper: DecoderWrapper, tok, template: str, onnx_path: str, cfg) -> tuple[float, float]:
    """Compares onnxruntime with PyTorch on a chat prefill and one cached 5-token step, and checks
    that `num_logits_to_keep` = 1 and 0 give the last row and no rows.

    Returns (max |logit diff|, max |hidden diff| / max |hidden|) over both steps.
    """
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    in_names, out_names = io_names(cfg.num_hidden_layers)
    prompt = torch.tensor([chat_prompt(tok, template, "What is the capital of Australia?")], dtype=torch.int64)
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
        feeds = {n: t.numpy() for n, t in zip(in_names, inputs)}
        got = sess.run(out_names, feeds)
        d_logit = float(np.abs(got[0] - ref.logits.numpy()).max())
        d_hidden = float(np.abs(got[1] - ref_hidden.numpy()).max())
        # HF's cache after this pass, last `seq` positions, sequence-major = what the graph returns
        ref_new = []
        for layer in ref.past_key_values.layers:
            ref_new += [layer.keys[:, :, -ids.shape[1]:].transpose(1, 2), layer.values[:, :, -ids.shape[1]:].transpose(1, 2)]
        d_present = max(float(np.abs(g - r.numpy()).max()) for g, r in zip(got[2:], ref_new))
        if any(g.shape != tuple(r.shape) for g, r in zip(got[2:], ref_new)):
            raise SystemExit(f"parity {name}: present shapes {got[2].shape} differ from {tuple(ref_new[0].shape)}")
        step(f"parity {name}: {ids.shape[1]} tokens, past {past_len}: max|dlogit|={d_logit:.3e} "
             f"max|dhidden|={d_hidden:.3e} max|dpresent|={d_present:.3e} "
             f"(|logit|max={float(ref.logits.abs().max()):.1f}, |hidden|max={float(ref_hidden.abs().max()):.1f})")
        if int(got[0][0, -1].argmax()) != int(ref.logits[0, -1].argmax()):
            raise SystemExit(f"parity {name}: greedy next token differs")
        for keep in (1, 0):
            kept = sess.run(["logits"], {**feeds, "num_logits_to_keep": np.array(keep, dtype=np.int64)})[0]
            if kept.shape[1] != keep or (keep and float(np.abs(kept[0, -1] - got[0][0, -1]).max()) > LOGIT_TOLERANCE):
                raise SystemExit(f"parity {name}: num_logits_to_keep={keep} gave logits of shape {kept.shape}")
        max_logit = max(max_logit, d_logit)
        max_hidden = max(max_hidden, d_hidden / float(ref_hidden.abs().max()))
        past = [torch.cat([p, torch.from_numpy(a)], dim=1) for p, a in zip(past, got[2:])]
        past_len += ids.shape[1]
    return max_logit, max_hidden


def _cache(past, cfg, model):
    from transformers.cache_utils import DynamicCache

    if past[0].shape[1] == 0:
        return DynamicCache(config=model.config)
    pairs = [(past[2 * i].transpose(1, 2).contiguous(), past[2 * i + 1].transpose(1, 2).contiguous())
             for i in range(cfg.num_hidden_layers)]
    return DynamicCache(ddp_cache_data=pairs, config=model.config)


def load(args) -> tuple[object, torch.nn.Module, str, str]:
    """Loads (tokenizer, model, display name, source file) from the chosen source."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    common = {"dtype": torch.float32, "attn_implementation": "eager"}
    if args.gguf:
        folder, file = os.path.split(os.path.abspath(args.gguf))
        step(f"loading tokenizer and model from {file} (dequantising to float32)")
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=file)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, **common)
        return tok, model, file.split(".")[0], file
    where = args.hf_dir or args.model_id
    step(f"loading tokenizer and model from {where}")
    tok = AutoTokenizer.from_pretrained(where)
    model = AutoModelForCausalLM.from_pretrained(where, **common)
    return tok, model, os.path.basename(os.path.normpath(where)), where


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--gguf", help="path to .gguf weights (dequantised to float32)")
    src.add_argument("--hf-dir", help="local Hugging Face model folder (config.json, weights, tokenizer)")
    src.add_argument("--model-id", help="Hugging Face hub id, downloaded by transformers")
    ap.add_argument("--out", required=True, help="output folder (created)")
    ap.add_argument("--source-spec", required=True, help="where the weights came from, e.g. a pip spec")
    ap.add_argument("--key", required=True, help="cache key of this export, stored in the manifest")
    ap.add_argument("--sha256", help="sha256 of the weights file (computed for --gguf when omitted)")
    ap.add_argument("--name", help="display name (default: from the source)")
    args = ap.parse_args()

    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    tok, model, name, source_file = load(args)
    sha = args.sha256 or (sha256_file(args.gguf) if args.gguf else "")
    model.eval()
    cfg = model.config
    n = cfg.num_hidden_layers
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    cfg.head_dim = head_dim
    if getattr(cfg, "num_key_value_heads", None) is None:
        cfg.num_key_value_heads = cfg.num_attention_heads
    context = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None) or 2048
    step(f"loaded {type(model).__name__}: hidden {cfg.hidden_size}, {n} layers, "
         f"{cfg.num_attention_heads} heads / {cfg.num_key_value_heads} kv heads, head_dim {head_dim}, "
         f"vocab {cfg.vocab_size}, context {context}")

    wrapper = DecoderWrapper(model, n).eval()
    onnx_path = os.path.join(args.out, ONNX_FILE)
    step("exporting ONNX (torch.onnx.export)")
    with torch.no_grad():
        exporter = export_onnx(wrapper, cfg, onnx_path)
    size_mb = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out)) / 1e6
    step(f"exported with {exporter} exporter: {size_mb:.0f} MB in {args.out}")

    step("writing tokenizer files and chat template")
    tok.save_pretrained(args.out)
    chat_template = tok.chat_template if isinstance(tok.chat_template, str) and tok.chat_template else None
    if chat_template is None:
        step("the tokenizer has no chat template: using the plain 'role: content' fallback")
        chat_template = FALLBACK_CHAT_TEMPLATE
    with open(os.path.join(args.out, "chat_template.jinja"), "w", encoding="utf8") as f:
        f.write(chat_template)

    step("parity check: onnxruntime vs PyTorch")
    d_logit, d_hidden = parity(model, wrapper, tok, chat_template, onnx_path, cfg)
    if d_logit > LOGIT_TOLERANCE or d_hidden > HIDDEN_REL_TOLERANCE:
        print(f"parity FAILED: max|dlogit|={d_logit:.3e} (tol {LOGIT_TOLERANCE}), "
              f"max|dhidden|/max|hidden|={d_hidden:.3e} (tol {HIDDEN_REL_TOLERANCE})", file=sys.stderr, flush=True)
        return 1

    eos = cfg.eos_token_id if cfg.eos_token_id is not None else tok.eos_token_id
    eos = eos if isinstance(eos, list) else [eos]
    manifest = {
        "format": "nest-onnx-decoder/2",
        "name": args.name or name,
        "architecture": type(model).__name__,
        "source": {"spec": args.source_spec, "file": source_file, "sha256": sha, "key": args.key},
        "onnx": ONNX_FILE,
        "dtype": "float32",
        "hidden_size": cfg.hidden_size,
        "num_layers": n,
        "num_attention_heads": cfg.num_attention_heads,
        "num_kv_heads": cfg.num_key_value_heads,
        "head_dim": head_dim,
        "vocab_size": cfg.vocab_size,
        "context_length": int(context),
        "bos_token_id": tok.bos_token_id,
        "eos_token_ids": [int(e) for e in eos if e is not None],
        "pad_token_id": tok.pad_token_id,
        "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask", "position_ids": "position_ids",
                   "num_logits_to_keep": "num_logits_to_keep",
                   "past_key": "past_key_values.{i}.key", "past_value": "past_key_values.{i}.value"},
        "outputs": {"logits": "logits", "hidden_states": "hidden_states",
                    "present_key": "present.{i}.key", "present_value": "present.{i}.value"},
        "knn_hidden": {
            "layer": n - 1,
            "description": f"residual stream entering decoder block {n - 1} (the last of {n}, 0-based), "
                           "before its input norm; = HF output_hidden_states[-2], un-normalised "
                           "(NEST repo choice, nest-algorithm.md §2.1)",
        },
        "tokenizer": "tokenizer.json",
        "tokenizer_config": "tokenizer_config.json",
        "chat_template": chat_template,
        "parity": {"max_abs_logit_diff": d_logit, "tolerance": LOGIT_TOLERANCE},
        "precisions": {"fp32": {"onnx": ONNX_FILE, "max_abs_logit_diff": d_logit, "greedy_agreement": 1.0,
                                "reference": "PyTorch fp32"}},
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
