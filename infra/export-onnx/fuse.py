"""Add a fused variant of an exported nest decoder (issue 13), parity-checked against fp32.

The traced graph (export.py) runs ~110 nodes per layer (eager attention with repeat_kv, masks built
from Where/Expand); onnxruntime's optimizers do not fuse it (infra/export-onnx/README.md). This
script builds the same Llama-family decoder by hand from onnxruntime contrib ops, 16.2 nodes per
layer: SkipSimplifiedLayerNormalization (residual add + RMSNorm in one kernel; its 4th output is
the residual stream, so the kNN's hidden state entering the last block is a free output), MatMul
Q/K/V (+ bias for Qwen2), RotaryEmbedding on Q and K (non-interleaved as HF's rotate_half; K's
output is also the graph's new_key_{i}), GroupQueryAttention (com.microsoft; Mistral's sliding
window as local_window_size), MatMul O, MatMul gate/up, Sigmoid·Mul·Mul (SiLU gate), MatMul down, lm_head on the
last num_logits_to_keep rows. Weights come from the source the fp32 export used (the GGUF,
dequantised by transformers as export.py does, or a HF folder).

  fused-fp32  float32 weights
  fused-int8  MatMulNBits 8-bit (quantize.py's settings: block 32, asymmetric, accuracy level 4)
  fused-int4  MatMulNBits 4-bit (same settings)

Graph I/O (manifest `precisions.<name>.io = "gqa"`, read by gpu-worker/src/runtime/decoder-session.ts):
  inputs  input_ids, position_ids [batch, seq] int64; seqlens_k [batch] int32 = total length - 1;
          total_sequence_length [] int32; num_logits_to_keep [] int64;
          past_key_{i} / past_value_{i} [batch, kv_heads, past or capacity, head_dim] float32 (BNSH;
          only the first seqlens_k + 1 - seq positions are read)
  outputs logits [batch, keep, vocab]; hidden_states [batch, seq, hidden] (the residual stream
          entering the last decoder block, as the traced graph's); new_key_{i} / new_value_{i}
          [batch, seq, kv_heads * head_dim] (this pass's rotated keys and values);
          present_key_{i} / present_value_{i} (past + new, as GroupQueryAttention returns them).
  The runtime (decoder-session.ts) feeds its padded cache buffers as the past, fetches only the
  new_* outputs and appends them; onnxruntime-node copies every fetched output, so fetching the
  presents would copy the whole cache per pass. With past and present bound to one buffer
  (Python IOBinding, FusedRunner below) GroupQueryAttention writes the new positions in place.

Parity against the fp32 graph, as quantize.py measures it (20 prompts, greedy 16 tokens, max
|logit difference| on a chat prefill), plus for every variant a scripted check of the runtime's
use: prefill, a 4-token draft chunk and greedy steps, through the shared buffer, against the
traced graph (max |Δ logit| and max |Δ hidden| / max |hidden|).

Usage: python fuse.py --model-dir DIR (--gguf FILE | --hf-dir DIR) --precision fused-fp32|fused-int8|fused-int4
                      [--min-agreement 0.5]
       python fuse.py --model-dir DIR --bench [--threads 2] [--runs 3]
           prefill and decode tokens/s of every prepared graph (traced and fused), alternating
           runs, as repack_gguf.py --bench measures them (a ~200-token chat prompt, 64 greedy
           steps, intra-op spinning off)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quantize import ACCURACY_LEVEL, BLOCK, NEW_TOKENS, PROMPTS, Runner, greedy_parity, write_manifest  # noqa: E402

_T0 = time.time()
FAMILIES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")
VARIANTS = {"fused-fp32": None, "fused-int8": 8, "fused-int4": 4}


def step(msg: str) -> None:
    print(f"[fuse {time.time() - _T0:6.1f}s] {msg}", flush=True)


def build(model, path: str, max_positions: int) -> int:
    """Writes the fused fp32 graph of a HF Llama-family `model` to `path` (weights in `path`.data);
    returns its node count. I/O as in the module docstring."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    cfg = model.config
    L, H, KV = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads
    D = getattr(cfg, "head_dim", None) or cfg.hidden_size // H
    eps = float(cfg.rms_norm_eps)
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise SystemExit(f"rope type {rope.get('rope_type')} is not supported by the fused graph")
    theta = float(rope.get("rope_theta") or getattr(cfg, "rope_theta", None) or 10000.0)
    # Sliding-window attention (Mistral; Qwen2 when use_sliding_window): GroupQueryAttention's
    # local_window_size, -1 = full causal attention.
    window = getattr(cfg, "sliding_window", None)
    if type(model).__name__ == "Qwen2ForCausalLM" and not getattr(cfg, "use_sliding_window", False):
        window = None
    window_attr = int(window) if window else -1
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    inits, nodes = [], []

    def init(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(op: str, ins: list[str], outs: list[str], name: str, domain: str = "", **attrs) -> list[str]:
        nodes.append(helper.make_node(op, ins, outs, name=name, domain=domain, **attrs))
        return outs

    def linear(x: str, key: str, name: str) -> str:
        """x @ W^T (+ b); node names as the traced graph's, so MatMulNBits and repack_gguf.py find them."""
        y = node("MatMul", [x, init(f"{key}.weight", sd[key + ".weight"].T)], [f"{name}/MatMul_output_0"], f"{name}/MatMul")[0]
        if key + ".bias" in sd:
            y = node("Add", [y, init(f"{key}.bias", sd[key + ".bias"])], [f"{name}/Add_output_0"], f"{name}/Add")[0]
        return y

    inv = 1.0 / (theta ** (np.arange(0, D, 2, dtype=np.float64) / D))
    ang = np.arange(max_positions, dtype=np.float64)[:, None] * inv[None, :]
    init("cos_cache", np.cos(ang).astype(np.float32))  # [max_positions, head_dim / 2]
    init("sin_cache", np.sin(ang).astype(np.float32))
    x = node("Gather", [init("embed_tokens.weight", sd["model.embed_tokens.weight"]), "input_ids"], ["/embed_output_0"], "/model/embed_tokens/Gather")[0]
    residual = x
    if L == 1:  # the residual stream entering the only block is the embedding output
        node("Identity", [x], ["hidden_states"], "/model/hidden_states")
    h = node("SimplifiedLayerNormalization", [x, init("layers.0.input_layernorm.weight", sd["model.layers.0.input_layernorm.weight"])],
             ["/model/layers.0/input_layernorm_output_0"], "/model/layers.0/input_layernorm", axis=-1, epsilon=eps, stash_type=1)[0]
    for i in range(L):
        p, n = f"model.layers.{i}.", f"/model/layers.{i}"
        q = linear(h, p + "self_attn.q_proj", f"{n}/self_attn/q_proj")
        k = linear(h, p + "self_attn.k_proj", f"{n}/self_attn/k_proj")
        v = linear(h, p + "self_attn.v_proj", f"{n}/self_attn/v_proj")
        # Rotary outside the attention, so the rotated keys of the new positions are a graph output
        # (new_key_{i}) the runtime appends to its cache without fetching the whole present.
        q = node("RotaryEmbedding", [q, "position_ids", "cos_cache", "sin_cache"], [f"{n}/q_rot_output_0"], f"{n}/self_attn/q_rotary",
                 domain="com.microsoft", interleaved=0)[0]
        k = node("RotaryEmbedding", [k, "position_ids", "cos_cache", "sin_cache"], [f"new_key_{i}"], f"{n}/self_attn/k_rotary",
                 domain="com.microsoft", interleaved=0)[0]
        v = node("Identity", [v], [f"new_value_{i}"], f"{n}/self_attn/v_out")[0]
        a = node("GroupQueryAttention", [q, k, v, f"past_key_{i}", f"past_value_{i}", "seqlens_k", "total_sequence_length"],
                 [f"{n}/attn_output_0", f"present_key_{i}", f"present_value_{i}"], f"{n}/self_attn/GroupQueryAttention",
                 domain="com.microsoft", num_heads=H, kv_num_heads=KV, do_rotary=0, local_window_size=window_attr)[0]
        o = linear(a, p + "self_attn.o_proj", f"{n}/self_attn/o_proj")
        h2, _, _, residual = node("SkipSimplifiedLayerNormalization", [o, residual, init(f"layers.{i}.post_attention_layernorm.weight", sd[p + "post_attention_layernorm.weight"])],
                                  [f"{n}/post_attention_layernorm_output_0", "", "", f"{n}/attn_residual_output_0"], f"{n}/post_attention_layernorm",
                                  domain="com.microsoft", epsilon=eps)
        g = linear(h2, p + "mlp.gate_proj", f"{n}/mlp/gate_proj")
        u = linear(h2, p + "mlp.up_proj", f"{n}/mlp/up_proj")
        sg = node("Sigmoid", [g], [f"{n}/mlp/Sigmoid_output_0"], f"{n}/mlp/Sigmoid")[0]
        silu = node("Mul", [g, sg], [f"{n}/mlp/silu_output_0"], f"{n}/mlp/silu")[0]
        gu = node("Mul", [silu, u], [f"{n}/mlp/Mul_output_0"], f"{n}/mlp/Mul")[0]
        m = linear(gu, p + "mlp.down_proj", f"{n}/mlp/down_proj")
        last = i + 1 == L
        gamma = sd["model.norm.weight"] if last else sd[f"model.layers.{i + 1}.input_layernorm.weight"]
        # The residual sum entering block L-1 is the kNN's hidden state (manifest knn_hidden).
        res_out = "hidden_states" if i + 1 == L - 1 else f"/model/layers.{i + 1}/residual_output_0"
        norm = "/model/norm" if last else f"/model/layers.{i + 1}/input_layernorm"
        h, _, _, residual = node("SkipSimplifiedLayerNormalization",
                                 [m, residual, init("norm.weight" if last else f"layers.{i + 1}.input_layernorm.weight", gamma)],
                                 [f"{norm}_output_0", "", "", "" if last else res_out], norm, domain="com.microsoft", epsilon=eps)
    # logits of the last num_logits_to_keep rows: Slice(h, seq - keep, seq) along axis 1
    node("Shape", [h], ["/keep/shape"], "/keep/Shape", start=1, end=2)
    node("Cast", ["num_logits_to_keep"], ["/keep/n"], "/keep/Cast", to=TensorProto.INT64)
    node("Sub", ["/keep/shape", "/keep/n"], ["/keep/start"], "/keep/Sub")
    node("Slice", [h, "/keep/start", "/keep/shape", init("/keep/axes", np.array([1], np.int64))], ["/keep/rows"], "/keep/Slice")
    lm = sd["lm_head.weight"] if "lm_head.weight" in sd else sd["model.embed_tokens.weight"]
    node("MatMul", ["/keep/rows", init("lm_head.weight", lm.T)], ["logits"], "/lm_head/MatMul")

    f32 = TensorProto.FLOAT
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["batch"]),
        helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, []),
        helper.make_tensor_value_info("num_logits_to_keep", TensorProto.INT64, []),
    ]
    outputs = [helper.make_tensor_value_info("logits", f32, ["batch", "keep", cfg.vocab_size]),
               helper.make_tensor_value_info("hidden_states", f32, ["batch", "seq", cfg.hidden_size])]
    for i in range(L):
        for kv in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_{kv}_{i}", f32, ["batch", KV, "past", D]))
            outputs.append(helper.make_tensor_value_info(f"present_{kv}_{i}", f32, ["batch", KV, "total", D]))
            outputs.append(helper.make_tensor_value_info(f"new_{kv}_{i}", f32, ["batch", "seq", KV * D]))
    graph = helper.make_graph(nodes, "nest-gqa-decoder", inputs, outputs, inits)
    mp = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    mp.ir_version = 8
    onnx.save_model(mp, path, save_as_external_data=True, location=os.path.basename(path) + ".data")
    return len(nodes)


class FusedRunner:
    """Greedy decoding through a fused graph, the KV cache one shared BNSH buffer per input as the
    runtime binds it (capacity positions; GroupQueryAttention writes the new ones in place)."""

    def __init__(self, path: str, m: dict, threads: int = 0, capacity: int = 1024):
        import onnxruntime as ort

        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.ort = ort
        self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.m, self.capacity = m, capacity
        self.L, self.KV, self.D = m["num_layers"], m["num_kv_heads"], m["head_dim"]
        self.reset()

    def reset(self) -> None:
        self.past_len = 0
        shape = (1, self.KV, self.capacity, self.D)
        self.buf = [self.ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, np.float32)) for _ in range(2 * self.L)]

    def forward(self, ids: list[int], keep: int = 1) -> tuple[np.ndarray, np.ndarray]:
        total = self.past_len + len(ids)
        io = self.sess.io_binding()
        io.bind_cpu_input("input_ids", np.array([ids], np.int64))
        io.bind_cpu_input("position_ids", np.arange(self.past_len, total, dtype=np.int64)[None])
        io.bind_cpu_input("seqlens_k", np.array([total - 1], np.int32))
        io.bind_cpu_input("total_sequence_length", np.array(total, np.int32))
        io.bind_cpu_input("num_logits_to_keep", np.array(keep, np.int64))
        io.bind_output("logits")
        io.bind_output("hidden_states")
        for i in range(self.L):
            for j, kv in enumerate(("key", "value")):
                io.bind_ortvalue_input(f"past_{kv}_{i}", self.buf[2 * i + j])
                io.bind_ortvalue_output(f"present_{kv}_{i}", self.buf[2 * i + j])
        self.sess.run_with_iobinding(io)
        out = io.get_outputs()
        self.past_len = total
        return out[0].numpy(), out[1].numpy()

    def greedy(self, prompt: list[int]) -> tuple[list[int], np.ndarray]:
        self.reset()
        logits, _ = self.forward(prompt)
        first = logits[0, -1].copy()
        out: list[int] = []
        for _ in range(NEW_TOKENS):
            t = int(logits[0, -1].argmax())
            out.append(t)
            if t in self.m["eos_token_ids"]:
                break
            logits, _ = self.forward([t])
        return out, first


def traced_forward(r: Runner, ids: list[int], past: list[np.ndarray], keep: int = 1):
    """Runner.forward with the hidden states too: (logits, hidden, past + new)."""
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


def runtime_parity(ref: Runner, fused: FusedRunner, prompt: list[int], steps: int = 16) -> dict:
    """The runtime's use, fused vs traced: prefill, greedy steps, a 4-token draft chunk, more steps;
    every row's logits kept. Returns max |Δ logit|, max |Δ hidden| / max |hidden|, greedy agreement."""
    m = ref.m
    past = [np.zeros((1, 0, m["num_kv_heads"], m["head_dim"]), np.float32) for _ in range(2 * m["num_layers"])]
    fused.reset()
    dl = dh = 0.0
    agree = 0
    chunks = [prompt] + [None] * 2 + [[28, 253, 2260, 314]] + [None] * steps  # None: the greedy token
    tok = None
    for c in chunks:
        ids = c if c is not None else [tok]
        rl, rh, past = traced_forward(ref, ids, past, keep=len(ids))
        fl, fh = fused.forward(ids, keep=len(ids))
        dl = max(dl, float(np.abs(rl - fl).max()))
        dh = max(dh, float(np.abs(rh - fh).max() / np.abs(rh).max()))
        agree += int(rl[0, -1].argmax() == fl[0, -1].argmax())
        tok = int(rl[0, -1].argmax())
    return {"max_abs_logit_diff": dl, "max_rel_hidden_diff": dh, "greedy_agreement": agree / len(chunks)}


def load_source(args):
    import torch
    from transformers import AutoModelForCausalLM

    if args.gguf:
        folder, file = os.path.split(os.path.abspath(args.gguf))
        step(f"loading {file} (dequantised to float32)")
        return AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32)
    step(f"loading {args.hf_dir}")
    return AutoModelForCausalLM.from_pretrained(args.hf_dir, dtype=torch.float32)


def chat_ids(tok, m: dict, q: str) -> list[int]:
    from jinja2 import Template  # transformers' own dependency

    text = Template(m["chat_template"]).render(messages=[{"role": "user", "content": q}], add_generation_prompt=True)
    return tok(text, add_special_tokens=False)["input_ids"]


def add_variant(args, m: dict, manifest_path: str) -> int:
    from transformers import AutoTokenizer

    if m["architecture"] not in FAMILIES:
        raise SystemExit(f"the fused graph is built for {', '.join(FAMILIES)}, not {m['architecture']}")
    name = f"model.{args.precision}.onnx"
    dst = os.path.join(args.model_dir, name)
    tmp = os.path.join(args.model_dir, f"{args.precision}.tmp-{os.getpid()}")
    os.makedirs(tmp, exist_ok=True)
    try:
        fp32 = os.path.join(tmp, "model.fused-fp32.onnx")
        model = load_source(args)
        count = build(model, fp32, m.get("context_length") or 4096)
        del model
        step(f"built the fused graph: {count} nodes ({count / m['num_layers']:.1f} per layer)")
        bits = VARIANTS[args.precision]
        if bits is None:
            os.replace(fp32 + ".data", dst + ".data")
            os.replace(fp32, dst)
        else:
            import onnx
            from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

            q = MatMulNBitsQuantizer(onnx.load(fp32), bits=bits, block_size=BLOCK, is_symmetric=False, accuracy_level=ACCURACY_LEVEL)
            q.process()
            q.model.save_model_to_file(os.path.join(tmp, name), use_external_data_format=False)
            os.replace(os.path.join(tmp, name), dst)
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    step(f"wrote {name}")

    tok = AutoTokenizer.from_pretrained(args.model_dir)
    ref, low = Runner(os.path.join(args.model_dir, m["onnx"]), m), FusedRunner(dst, m)
    max_logit, agreement, same = greedy_parity(ref, low, tok, m, args.precision)
    use = runtime_parity(ref, low, chat_ids(tok, m, PROMPTS[0]))
    step(f"{args.precision}: prefill + draft chunk + greedy steps through the shared buffer: {use}")
    if agreement < args.min_agreement:
        print(f"parity FAILED: greedy agreement {agreement:.3f} < {args.min_agreement}", file=sys.stderr)
        return 1
    m.setdefault("precisions", {})[args.precision] = {
        "onnx": name, "io": "gqa", "max_abs_logit_diff": max_logit, "greedy_agreement": agreement,
        "identical_outputs": same, "prompts": len(PROMPTS), "reference": "onnxruntime fp32 (traced graph)",
        "nodes": count, "runtime_parity": use,
    }
    write_manifest(manifest_path, m)
    return 0


def bench(args, m: dict) -> int:
    from repack_gguf import BENCH_TEXT
    from transformers import AutoTokenizer

    import onnxruntime as ort

    tok = AutoTokenizer.from_pretrained(args.model_dir)
    prompt = chat_ids(tok, m, f"Summarise: {BENCH_TEXT}")[:200]
    graphs = {"fp32": m["onnx"], **{p: v["onnx"] for p, v in (m.get("precisions") or {}).items()}}
    runners = {}
    for p, f in graphs.items():
        if p.startswith("fused-"):
            runners[p] = FusedRunner(os.path.join(args.model_dir, f), m, args.threads)
        else:
            so = ort.SessionOptions()
            so.intra_op_num_threads = args.threads
            so.inter_op_num_threads = 1
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            r = Runner.__new__(Runner)
            r.sess = ort.InferenceSession(os.path.join(args.model_dir, f), so, providers=["CPUExecutionProvider"])
            r.m, r.outputs = m, [o.name for o in r.sess.get_outputs()]
            runners[p] = r
    res: dict[str, list] = {p: [] for p in graphs}
    for _run in range(args.runs):
        for p, r in runners.items():
            load = os.getloadavg()[0]
            fused = isinstance(r, FusedRunner)
            past = [np.zeros((1, 0, m["num_kv_heads"], m["head_dim"]), np.float32) for _ in range(2 * m["num_layers"])]
            t = time.perf_counter()
            if fused:
                r.reset()
                logits, _ = r.forward(prompt)
            else:
                logits, _, past = traced_forward(r, prompt, past)
            prefill = len(prompt) / (time.perf_counter() - t)
            t = time.perf_counter()
            for _ in range(64):
                nxt = int(logits[0, -1].argmax())
                if fused:
                    logits, _ = r.forward([nxt])
                else:
                    logits, _, past = traced_forward(r, [nxt], past)
            decode = 64 / (time.perf_counter() - t)
            res[p].append((prefill, decode))
            step(f"{p:11s} prefill {prefill:7.1f} tok/s, decode {decode:6.1f} tok/s (load {load:.2f})")
    for p, rows in res.items():
        med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
        print(f"median {p:11s} prefill {med([r[0] for r in rows]):7.1f} tok/s  decode {med([r[1] for r in rows]):6.1f} tok/s")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", required=True)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--gguf", help="the GGUF the fp32 export was made from")
    src.add_argument("--hf-dir", help="the HF folder the fp32 export was made from")
    ap.add_argument("--precision", choices=sorted(VARIANTS))
    ap.add_argument("--min-agreement", type=float, default=0.5)
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    manifest_path = os.path.join(args.model_dir, "manifest.json")
    with open(manifest_path, encoding="utf8") as f:
        m = json.load(f)
    if args.bench:
        return bench(args, m)
    if not args.precision or not (args.gguf or args.hf_dir):
        ap.error("--precision and one of --gguf / --hf-dir are needed (or --bench)")
    return add_variant(args, m, manifest_path)


if __name__ == "__main__":
    sys.exit(main())
