"""Probe for issue 13 (a decoder graph as fast as llama.cpp): how fast is a hand-built graph of
onnxruntime contrib ops, before the runtime is changed to serve one?

Builds a Llama-family decoder from the GGUF's weights (dequantised by transformers, as export.py
does) with ~13 nodes per layer instead of the traced graph's ~110:
  SkipSimplifiedLayerNormalization (residual add + RMSNorm in one kernel; its 4th output is the
  residual stream, so the kNN's hidden state entering the last block is a free output),
  MatMul Q/K/V, GroupQueryAttention (com.microsoft; rotary inside, do_rotary=1, BNSH KV cache),
  MatMul O, MatMul gate/up, Sigmoid·Mul·Mul (SiLU gate), MatMul down, lm_head on the kept rows.
Then it checks parity against the served graph (model.onnx, same prompt, prefill then greedy steps:
max |Δ logit| and max relative |Δ hidden|) and times prefill and decode tokens/s like
repack_gguf.py --bench (a ~200-token chat prompt, 64 greedy steps, intra-op spinning off),
alternating runs between the graphs. ``--int4`` adds MatMulNBits variants (quantize.py's
quantizer, block 32, accuracy level 4) of both graphs, so the kernel-count effect is compared at
the same weights.

The KV cache is GQA's: past [1, kv_heads, past, head_dim] in, present = past + new out (copied by
the kernel each pass); with --share-buffer the past and present are one preallocated
[1, kv_heads, max_seq, head_dim] buffer bound as both input and output (IOBinding), so a pass
writes only its new positions.

Usage: python fused_probe.py --model-dir DIR --gguf FILE [--threads 2] [--runs 3] [--int4]
                             [--share-buffer] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quantize import Runner  # noqa: E402

_T0 = time.time()
MAX_SEQ = 1024


def step(msg: str) -> None:
    print(f"[fused {time.time() - _T0:6.1f}s] {msg}", flush=True)


def build(model, path: str, max_seq: int) -> None:
    """Writes the fused fp32 graph of a HF Llama-family `model` to `path`.
    Inputs: input_ids [1, seq] int64, seqlens_k [1] int32 (total length - 1), total_sequence_length
    [] int32, num_logits_to_keep [] int64, past_key_{i}/past_value_{i} [1, kv_heads, past, head_dim].
    Outputs: logits [1, keep, vocab], hidden_states [1, seq, hidden] (residual stream entering the
    last block), present_key_{i}/present_value_{i}."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    cfg = model.config
    L, H, KV = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads
    D = cfg.hidden_size // H
    eps = float(cfg.rms_norm_eps)
    rope = getattr(cfg, "rope_parameters", None) or {}
    theta = float(rope.get("rope_theta") or getattr(cfg, "rope_theta", None) or 10000.0)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    inits, nodes = [], []

    def init(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(op: str, ins: list[str], outs: list[str], domain: str = "", **attrs) -> list[str]:
        nodes.append(helper.make_node(op, ins, outs, name=f"/{op}_{len(nodes)}", domain=domain, **attrs))
        return outs

    inv = 1.0 / (theta ** (np.arange(0, D, 2, dtype=np.float64) / D))
    ang = np.arange(max_seq, dtype=np.float64)[:, None] * inv[None, :]
    init("cos_cache", np.cos(ang).astype(np.float32))
    init("sin_cache", np.sin(ang).astype(np.float32))
    emb = init("embed", sd["model.embed_tokens.weight"])
    x = node("Gather", [emb, "input_ids"], ["x0"])[0]
    residual = x
    h = node("SimplifiedLayerNormalization", [x, init("ln1.0", sd["model.layers.0.input_layernorm.weight"])], ["h.0"],
             axis=-1, epsilon=eps, stash_type=1)[0]
    hidden_out = None
    for i in range(L):
        p = f"model.layers.{i}."
        q = node("MatMul", [h, init(f"wq.{i}", sd[p + "self_attn.q_proj.weight"].T)], [f"q.{i}"])[0]
        k = node("MatMul", [h, init(f"wk.{i}", sd[p + "self_attn.k_proj.weight"].T)], [f"k.{i}"])[0]
        v = node("MatMul", [h, init(f"wv.{i}", sd[p + "self_attn.v_proj.weight"].T)], [f"v.{i}"])[0]
        a = node("GroupQueryAttention", [q, k, v, f"past_key_{i}", f"past_value_{i}", "seqlens_k", "total_sequence_length",
                                         "cos_cache", "sin_cache"],
                 [f"attn.{i}", f"present_key_{i}", f"present_value_{i}"], domain="com.microsoft",
                 num_heads=H, kv_num_heads=KV, do_rotary=1, rotary_interleaved=0)[0]
        o = node("MatMul", [a, init(f"wo.{i}", sd[p + "self_attn.o_proj.weight"].T)], [f"o.{i}"])[0]
        h2, _, _, residual = node("SkipSimplifiedLayerNormalization",
                                  [o, residual, init(f"ln2.{i}", sd[p + "post_attention_layernorm.weight"])],
                                  [f"h2.{i}", "", "", f"res_mid.{i}"], domain="com.microsoft", epsilon=eps)
        g = node("MatMul", [h2, init(f"wg.{i}", sd[p + "mlp.gate_proj.weight"].T)], [f"g.{i}"])[0]
        u = node("MatMul", [h2, init(f"wu.{i}", sd[p + "mlp.up_proj.weight"].T)], [f"u.{i}"])[0]
        s = node("Sigmoid", [g], [f"sg.{i}"])[0]
        s = node("Mul", [g, s], [f"silu.{i}"])[0]
        s = node("Mul", [s, u], [f"gu.{i}"])[0]
        m = node("MatMul", [s, init(f"wd.{i}", sd[p + "mlp.down_proj.weight"].T)], [f"mlp.{i}"])[0]
        gamma = sd[f"model.layers.{i + 1}.input_layernorm.weight"] if i + 1 < L else sd["model.norm.weight"]
        res_name = "hidden_states" if i + 1 == L - 1 else f"res.{i + 1}"
        h, _, _, residual = node("SkipSimplifiedLayerNormalization", [m, residual, init(f"ln1.{i + 1}", gamma)],
                                 [f"h.{i + 1}", "", "", res_name], domain="com.microsoft", epsilon=eps)
        if i + 1 == L - 1:
            hidden_out = residual
    assert hidden_out == "hidden_states"
    node("Neg", ["num_logits_to_keep"], ["neg_keep"])
    node("Unsqueeze", ["neg_keep", init("ax0", np.array([0], np.int64))], ["start"])
    node("Slice", [h, "start", init("big", np.array([1 << 30], np.int64)), init("ax1", np.array([1], np.int64))], ["h_kept"])
    lm = sd["lm_head.weight"] if "lm_head.weight" in sd else sd["model.embed_tokens.weight"]
    node("MatMul", ["h_kept", init("lm_head", lm.T)], ["logits"])

    f32 = TensorProto.FLOAT
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "seq"]),
        helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, [1]),
        helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, []),
        helper.make_tensor_value_info("num_logits_to_keep", TensorProto.INT64, []),
    ]
    outputs = [helper.make_tensor_value_info("logits", f32, [1, "keep", cfg.vocab_size]),
               helper.make_tensor_value_info("hidden_states", f32, [1, "seq", cfg.hidden_size])]
    for i in range(L):
        for kv in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_{kv}_{i}", f32, [1, KV, "past", D]))
            outputs.append(helper.make_tensor_value_info(f"present_{kv}_{i}", f32, [1, KV, "total", D]))
    graph = helper.make_graph(nodes, "nest-fused-probe", inputs, outputs, inits)
    mp = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    mp.ir_version = 8
    onnx.save_model(mp, path, save_as_external_data=True, location=os.path.basename(path) + ".data")
    step(f"wrote {path}: {len(nodes)} nodes ({len(nodes) / L:.1f} per layer)")


class FusedRunner:
    """Greedy decoding through the fused graph; KV cache in GQA's BNSH layout."""

    def __init__(self, path: str, m: dict, threads: int, share: bool):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.ort = ort
        self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.m, self.share = m, share
        self.L, self.KV, self.D = m["num_layers"], m["num_kv_heads"], m["head_dim"]
        self.outputs = [o.name for o in self.sess.get_outputs()]

    def reset(self) -> None:
        self.past_len = 0
        if self.share:
            shape = (1, self.KV, MAX_SEQ, self.D)
            self.buf = [self.ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, np.float32)) for _ in range(2 * self.L)]
        else:
            self.past = [np.zeros((1, self.KV, 0, self.D), np.float32) for _ in range(2 * self.L)]

    def forward(self, ids: list[int], keep: int = 1) -> tuple[np.ndarray, np.ndarray]:
        total = self.past_len + len(ids)
        feeds = {
            "input_ids": np.array([ids], np.int64),
            "seqlens_k": np.array([total - 1], np.int32),
            "total_sequence_length": np.array(total, np.int32),
            "num_logits_to_keep": np.array(keep, np.int64),
        }
        if self.share:
            io = self.sess.io_binding()
            for k, v in feeds.items():
                io.bind_cpu_input(k, v)
            io.bind_output("logits")
            io.bind_output("hidden_states")
            for i in range(self.L):
                for j, kv in enumerate(("key", "value")):
                    io.bind_ortvalue_input(f"past_{kv}_{i}", self.buf[2 * i + j])
                    io.bind_ortvalue_output(f"present_{kv}_{i}", self.buf[2 * i + j])
            self.sess.run_with_iobinding(io)
            out = io.get_outputs()
            logits, hidden = out[0].numpy(), out[1].numpy()
        else:
            for i in range(self.L):
                feeds[f"past_key_{i}"] = self.past[2 * i]
                feeds[f"past_value_{i}"] = self.past[2 * i + 1]
            out = dict(zip(self.outputs, self.sess.run(self.outputs, feeds)))
            self.past = [out[f"present_{kv}_{i}"] for i in range(self.L) for kv in ("key", "value")]
            logits, hidden = out["logits"], out["hidden_states"]
        self.past_len = total
        return logits, hidden


def reference(model_dir: str, m: dict, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    r = Runner.__new__(Runner)
    r.sess = ort.InferenceSession(os.path.join(model_dir, m["onnx"]), so, providers=["CPUExecutionProvider"])
    r.m, r.outputs = m, [o.name for o in r.sess.get_outputs()]
    return r


def ref_forward(r, ids: list[int], past: list[np.ndarray], keep: int = 1):
    m = r.m
    pl = past[0].shape[1]
    feeds = {"input_ids": np.array([ids], np.int64), "attention_mask": np.ones((1, pl + len(ids)), np.int64),
             "position_ids": np.arange(pl, pl + len(ids), dtype=np.int64)[None], "num_logits_to_keep": np.array(keep, np.int64)}
    for i in range(m["num_layers"]):
        feeds[f"past_key_values.{i}.key"], feeds[f"past_key_values.{i}.value"] = past[2 * i], past[2 * i + 1]
    out = dict(zip(r.outputs, r.sess.run(r.outputs, feeds)))
    nxt = []
    for i in range(m["num_layers"]):
        nxt += [np.concatenate([past[2 * i], out[f"present.{i}.key"]], 1), np.concatenate([past[2 * i + 1], out[f"present.{i}.value"]], 1)]
    return out["logits"], out["hidden_states"], nxt


def parity(ref, fused: FusedRunner, prompt: list[int], steps: int) -> dict:
    """Prefill then a 4-token draft chunk then greedy steps, fused vs reference: max |Δ logit| over
    all kept rows, max |Δ hidden| / max |hidden|, and whether the greedy tokens agree."""
    m = ref.m
    past = [np.zeros((1, 0, m["num_kv_heads"], m["head_dim"]), np.float32) for _ in range(2 * m["num_layers"])]
    fused.reset()
    dl = dh = 0.0
    agree = 0
    chunks = [prompt, None, [28, 253, 2260, 314]] + [None] * steps  # None = the greedy token
    tok = None
    for c in chunks:
        ids = c if c is not None else [tok]
        rl, rh, past = ref_forward(ref, ids, past, keep=len(ids))
        fl, fh = fused.forward(ids, keep=len(ids))
        dl = max(dl, float(np.abs(rl - fl).max()))
        dh = max(dh, float(np.abs(rh - fh).max() / np.abs(rh).max()))
        agree += int(rl[0, -1].argmax() == fl[0, -1].argmax())
        tok = int(rl[0, -1].argmax())
    return {"max_abs_logit_diff": dl, "max_rel_hidden_diff": dh, "greedy_agreement": agree / len(chunks)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--out", default="/tmp/nest-fused-probe")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--int4", action="store_true")
    ap.add_argument("--share-buffer", action="store_true")
    args = ap.parse_args()
    import torch
    from transformers import AutoModelForCausalLM

    m = json.load(open(os.path.join(args.model_dir, "manifest.json")))
    if m["architecture"] not in ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"):
        raise SystemExit(f"the probe builds Llama-family graphs only, not {m['architecture']}")
    os.makedirs(args.out, exist_ok=True)
    fused_path = os.path.join(args.out, "fused.onnx")
    if not os.path.exists(fused_path):
        folder, file = os.path.split(os.path.abspath(args.gguf))
        step(f"loading {file} (dequantised to float32)")
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32)
        build(model, fused_path, MAX_SEQ)
        del model
    graphs = {"traced fp32": os.path.join(args.model_dir, m["onnx"]), "fused fp32": fused_path}
    if args.int4:
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        q4 = os.path.join(args.out, "fused.int4.onnx")
        if not os.path.exists(q4):
            q = MatMulNBitsQuantizer(onnx.load(fused_path), bits=4, block_size=32, is_symmetric=False, accuracy_level=4)
            q.process()
            q.model.save_model_to_file(q4, use_external_data_format=False)
            step(f"wrote {q4}")
        graphs["traced int4"] = os.path.join(args.model_dir, "model.int4.onnx")
        graphs["fused int4"] = q4

    from repack_gguf import BENCH_TEXT
    from jinja2 import Template
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.model_dir)
    text = Template(m["chat_template"]).render(messages=[{"role": "user", "content": f"Summarise: {BENCH_TEXT}"}],
                                               add_generation_prompt=True)
    prompt = tok(text, add_special_tokens=False)["input_ids"][:200]
    ref = reference(args.model_dir, m, args.threads)
    fused = FusedRunner(fused_path, m, args.threads, args.share_buffer)
    step(f"parity fused fp32 vs traced fp32: {parity(ref, fused, prompt, 16)}")

    runners = {}
    for name, path in graphs.items():
        if name.startswith("traced"):
            r = reference(args.model_dir, dict(m, onnx=os.path.basename(path)), args.threads)
            runners[name] = ("traced", r)
        else:
            runners[name] = ("fused", FusedRunner(path, m, args.threads, args.share_buffer))
    res: dict[str, list] = {n: [] for n in graphs}
    for _run in range(args.runs):
        for name, (kind, r) in runners.items():
            load = os.getloadavg()[0]
            t = time.perf_counter()
            if kind == "traced":
                past = [np.zeros((1, 0, m["num_kv_heads"], m["head_dim"]), np.float32) for _ in range(2 * m["num_layers"])]
                logits, _, past = ref_forward(r, prompt, past)
            else:
                r.reset()
                logits, _ = r.forward(prompt)
            prefill_s = time.perf_counter() - t
            t = time.perf_counter()
            for _ in range(64):
                nxt = int(logits[0, -1].argmax())
                if kind == "traced":
                    logits, _, past = ref_forward(r, [nxt], past)
                else:
                    logits, _ = r.forward([nxt])
            decode_s = time.perf_counter() - t
            res[name].append((len(prompt) / prefill_s, 64 / decode_s, load))
            step(f"{name}: prefill {len(prompt) / prefill_s:7.1f} tok/s, decode {64 / decode_s:6.1f} tok/s (load {load:.2f})")
    for name, rows in res.items():
        pf = sorted(r[0] for r in rows)[len(rows) // 2]
        dc = sorted(r[1] for r in rows)[len(rows) // 2]
        print(f"median {name:12s} prefill {pf:7.1f} tok/s  decode {dc:6.1f} tok/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
