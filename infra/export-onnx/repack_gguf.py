"""Repack a GGUF's own block-quantised weights into MatMulNBits nodes of an exported nest decoder.

quantize.py's int4 requantises the fp32 graph (already dequantised from Q4_1) onto a second 4-bit
grid; this script instead carries the GGUF's own blocks over bit for bit, so the only error left
is the activation quantisation of accuracy level 4 (int8 activations per block, as llama.cpp's
Q4_1 x Q8_1 and Q8_0 x Q8_0 dot products do).

  Q4_1 (block 32 along K): w = d*q + m, q in [0, 15]. MatMulNBits computes scale*(q - zp), so
       --zero-points zero: bits=4, scale=d, uint8 zp=0 gives d*q; the m term is an exact extra
       product, sum_k m_b*x_k over block b = m_b*blocksum_b(x):
         Y = MatMulNBits(x; q, d, 0) + MatMul(ReduceSum(Reshape(x, [.., K/32, 32]), -1), M^T)
       (one ReduceSum per distinct input, shared by q/k/v and by gate/up).
       --zero-points centred (default): the same with zp=8 (MatMulNBits' default) and M = m + 8d,
       w = d*(q - 8) + (m + 8d). At accuracy level 4 the int8-activation error then multiplies
       centred weights d*(q - 8) instead of all-positive d*q (greedy agreement 0.65 with zp=0).
       --zero-points float: zp = -m/d as a float32 zero point (T1-typed zero_points; exact, but
       onnxruntime 1.31.1's CPU kernel takes a slow path: 4 tok/s decode).
  Q8_0 (block 32): w = d*q, q int8 -> MatMulNBits bits=8, uint8 q+128, zp=128 (the lm_head,
       tied to token_embd, which this GGUF stores as Q8_0).
  F32/F16 tensors stay as they are.

The mapping GGUF tensor -> ONNX MatMul comes from the node names (/model/layers.{i}/self_attn/q_proj
-> blk.{i}.attn_q, /lm_head -> output or token_embd). GGUF stores a weight as [N, K] rows of
blocks along K; the ONNX MatMul weight is [K, N], and llama.cpp's converter permutes the rows of
attn_q / attn_k for its rotary layout (transformers' GGUF loader reverses that). Before replacing a
weight the script dequantises the blocks (d*q + m with the row permutation) and asserts they
reproduce the fp32 initializer to 1e-6, which proves the mapping. Parity against the fp32 graph
then uses quantize.py's measures (max |dlogit| at prefill, greedy agreement over 20 prompts x 16
tokens) plus the max |dhidden_states| at prefill.

Usage: python repack_gguf.py --model-dir DIR --gguf FILE [--name q4_1] [--accuracy-level 4]
                             [--zero-points centred|zero|float] [--no-manifest]
       python repack_gguf.py --model-dir DIR --bench model.onnx model.q4_1.onnx ... [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quantize import PROMPTS, Runner  # noqa: E402  (parity helpers shared with quantize.py)

BLOCK = 32
_T0 = time.time()
_PROJ = {
    "self_attn/q_proj": "attn_q", "self_attn/k_proj": "attn_k", "self_attn/v_proj": "attn_v",
    "self_attn/o_proj": "attn_output", "mlp/gate_proj": "ffn_gate", "mlp/up_proj": "ffn_up",
    "mlp/down_proj": "ffn_down",
}


def step(msg: str) -> None:
    print(f"[repack {time.time() - _T0:6.1f}s] {msg}", flush=True)


def gguf_name(node_name: str) -> str | None:
    m = re.match(r"^/model/layers\.(\d+)/(self_attn/[qkvo]_proj|mlp/(?:gate|up|down)_proj)/MatMul$", node_name)
    if m:
        return f"blk.{m.group(1)}.{_PROJ[m.group(2)]}.weight"
    if node_name == "/lm_head/MatMul":
        return "output.weight"
    return None


def rope_rows(n: int, n_head: int) -> np.ndarray:
    """Row order transformers gives attn_q / attn_k (its _reverse_permute_weights) as an index array."""
    dim = n // n_head // 2
    return np.arange(n).reshape(n_head, dim, 2).swapaxes(2, 1).reshape(n)


def q4_1_blocks(raw: np.ndarray, n: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GGUF Q4_1 rows [N, K/32 * 20 bytes] -> d [N, nb], m [N, nb], q [N, nb, 32] (uint8 0..15)."""
    b = raw.reshape(n, k // BLOCK, 20)
    d = b[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    m = b[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
    qs = b[..., 4:]  # byte j: element j in the low nibble, element j + 16 in the high one
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)
    return d, m, q


def q8_0_blocks(raw: np.ndarray, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """GGUF Q8_0 rows [N, K/32 * 34 bytes] -> d [N, nb], q [N, nb, 32] (int8)."""
    b = raw.reshape(n, k // BLOCK, 34)
    d = b[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    q = b[..., 2:].copy().view(np.int8)
    return d, q


def pack4(q: np.ndarray) -> np.ndarray:
    """MatMulNBits 4-bit blob: element 2j in the low nibble of byte j, 2j+1 in the high one."""
    q = q.astype(np.uint8)
    return (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)


def repack(src: str, dst: str, gguf_path: str, manifest: dict, accuracy_level: int, zero_points: str) -> dict:
    import onnx
    from gguf import GGUFReader
    from onnx import helper, numpy_helper

    reader = GGUFReader(gguf_path)
    tensors = {t.name: t for t in reader.tensors}
    if "output.weight" not in tensors:
        tensors["output.weight"] = tensors["token_embd.weight"]  # tied lm_head
    model = onnx.load(src)
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    new_nodes, new_inits, drop = [], [], set()
    blocksum_of: dict[str, str] = {}
    counts: dict[str, int] = {}
    max_map_err = 0.0

    def blocksum(x: str, k: int) -> list:
        """Node(s) producing sum over each 32-block of x's last axis: [.., K] -> [.., K/32]."""
        if x in blocksum_of:
            return []
        tag = f"/repack/blocksum{len(blocksum_of)}"
        shape = f"{tag}/shape"
        new_inits.append(numpy_helper.from_array(np.array([0, 0, k // BLOCK, BLOCK], dtype=np.int64), shape))
        axes = f"{tag}/axes"
        new_inits.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), axes))
        blocksum_of[x] = f"{tag}/out"
        return [helper.make_node("Reshape", [x, shape], [f"{tag}/blocks"], name=f"{tag}/Reshape"),
                helper.make_node("ReduceSum", [f"{tag}/blocks", axes], [blocksum_of[x]], name=f"{tag}/ReduceSum",
                                 keepdims=0)]

    for node in g.node:
        name = gguf_name(node.name) if node.op_type == "MatMul" else None
        if name is None or node.input[1] not in inits:
            new_nodes.append(node)
            continue
        t = tensors[name]
        w = numpy_helper.to_array(inits[node.input[1]])  # [K, N]
        k, n = w.shape
        kind = t.tensor_type.name
        base = node.name.rsplit("/", 1)[0] + "/MatMulNBits"
        rows = np.arange(n)
        if ".attn_q." in name:
            rows = rope_rows(n, manifest["num_attention_heads"])
        elif ".attn_k." in name:
            rows = rope_rows(n, manifest["num_kv_heads"])
        if kind == "Q4_1":
            d, m, q = q4_1_blocks(np.asarray(t.data), n, k)
            d, m, q = d[rows], m[rows], q[rows]
            deq = (d[..., None] * q + m[..., None]).reshape(n, k)
            bits = 4
        elif kind == "Q8_0":
            d, q = q8_0_blocks(np.asarray(t.data), n, k)
            d, q = d[rows], q[rows]
            deq = (d[..., None] * q).reshape(n, k)
            bits = 8
        else:
            new_nodes.append(node)
            counts[kind] = counts.get(kind, 0) + 1
            continue
        err = float(np.abs(deq - w.T).max() / max(np.abs(w).max(), 1e-30))
        max_map_err = max(max_map_err, err)
        if err > 1e-6:
            raise SystemExit(f"{name} does not reproduce {node.input[1]} ({node.name}): max rel err {err:.2e}")
        counts[kind] = counts.get(kind, 0) + 1
        nb = k // BLOCK
        x, y = node.input[0], node.output[0]
        ins = [x, f"{base}/B", f"{base}/scales", f"{base}/zero_points"]
        new_inits.append(numpy_helper.from_array(d.astype(np.float32), f"{base}/scales"))
        if bits == 8:
            new_inits.append(numpy_helper.from_array((q.astype(np.int16) + 128).astype(np.uint8), f"{base}/B"))
            new_inits.append(numpy_helper.from_array(np.full((n, nb), 128, dtype=np.uint8), f"{base}/zero_points"))
        else:
            new_inits.append(numpy_helper.from_array(pack4(q), f"{base}/B"))
            if zero_points == "centred":
                # w = d*(q - 8) + (m + 8d): MatMulNBits' default 4-bit zero point (8, input omitted)
                # plus an exact block-sum term with the block's midpoint m + 8d
                m = m + 8 * d
                mid = (d[..., None] * (q.astype(np.float32) - 8) + m[..., None]).reshape(n, k)
                err = float(np.abs(mid - w.T).max() / max(np.abs(w).max(), 1e-30))
                max_map_err = max(max_map_err, err)
                if err > 1e-6:
                    raise SystemExit(f"{name}: d*(q - 8) + (m + 8d) does not reproduce it: {err:.2e}")
                ins = ins[:3]
            elif zero_points == "float":
                with np.errstate(divide="ignore", invalid="ignore"):
                    zp = np.where(d != 0, -m / d, 0.0).astype(np.float32)
                if np.any((d == 0) & (m != 0)):
                    raise SystemExit(f"{name}: a block with d = 0 and m != 0 has no float zero point")
                new_inits.append(numpy_helper.from_array(zp, f"{base}/zero_points"))
            else:
                new_inits.append(numpy_helper.from_array(np.zeros((n, (nb + 1) // 2), dtype=np.uint8),
                                                         f"{base}/zero_points"))
        decomposed = bits == 4 and zero_points != "float"
        out = f"{base}/out" if decomposed else y
        new_nodes.append(helper.make_node("MatMulNBits", ins, [out], name=base, domain="com.microsoft",
                                          K=k, N=n, bits=bits, block_size=BLOCK, accuracy_level=accuracy_level))
        if decomposed:
            new_nodes += blocksum(x, k)
            mt = f"{base}/min_t"
            new_inits.append(numpy_helper.from_array(np.ascontiguousarray(m.T), mt))  # [K/32, N]
            new_nodes.append(helper.make_node("MatMul", [blocksum_of[x], mt], [f"{base}/min_out"],
                                              name=f"{base}/MinMatMul"))
            new_nodes.append(helper.make_node("Add", [out, f"{base}/min_out"], [y], name=f"{base}/Add"))
        drop.add(node.input[1])

    still_used = {i for nd in new_nodes for i in nd.input}
    keep = [i for i in g.initializer if i.name not in drop or i.name in still_used]
    del g.initializer[:]
    g.initializer.extend(keep + new_inits)
    del g.node[:]
    g.node.extend(new_nodes)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save_model(model, dst)
    step(f"replaced {counts} MatMuls; max relative |dequantised GGUF - fp32 initializer| = {max_map_err:.2e}")
    return {"tensor_types": counts, "max_rel_mapping_err": max_map_err}


class HiddenRunner(Runner):
    def prefill(self, ids: list[int]) -> dict[str, np.ndarray]:
        m, past = self.m, self.empty()
        feeds = {
            "input_ids": np.array([ids], dtype=np.int64),
            "attention_mask": np.ones((1, len(ids)), dtype=np.int64),
            "position_ids": np.arange(len(ids), dtype=np.int64)[None],
            "num_logits_to_keep": np.array(1, dtype=np.int64),
        }
        for i in range(m["num_layers"]):
            feeds[f"past_key_values.{i}.key"] = past[2 * i]
            feeds[f"past_key_values.{i}.value"] = past[2 * i + 1]
        return dict(zip(self.outputs, self.sess.run(self.outputs, feeds)))


def parity(src: str, dst: str, model_dir: str, manifest: dict, label: str) -> dict:
    from jinja2 import Template
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    template = Template(manifest["chat_template"])
    ref, low = HiddenRunner(src, manifest), HiddenRunner(dst, manifest)
    hid = manifest["outputs"]["hidden_states"]
    agree = total = same = 0
    max_logit = max_hidden = max_hidden_rel = 0.0
    for i, p in enumerate(PROMPTS):
        text = template.render(messages=[{"role": "user", "content": p}], add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        a, la = ref.greedy(ids)
        b, lb = low.greedy(ids)
        max_logit = max(max_logit, float(np.abs(la - lb).max()))
        ha, hb = ref.prefill(ids)[hid], low.prefill(ids)[hid]
        dh = float(np.abs(ha - hb).max())
        max_hidden = max(max_hidden, dh)
        # relative to the largest entry per position, skipping position 0 (massive activation ~1e4)
        rel = np.abs(ha - hb)[0, 1:].max(-1) / np.abs(ha)[0, 1:].max(-1)
        max_hidden_rel = max(max_hidden_rel, float(rel.max()))
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        agree += n
        total += len(a)
        same += int(a == b)
        if i == 0:
            step(f"'{p}': fp32 {tok.decode(a)!r} / {label} {tok.decode(b)!r}")
    res = {"max_abs_logit_diff": max_logit, "greedy_agreement": agree / max(total, 1), "identical_outputs": same,
           "prompts": len(PROMPTS), "max_abs_hidden_diff": max_hidden, "max_rel_hidden_diff": max_hidden_rel,
           "reference": "onnxruntime fp32"}
    step(f"{label} vs fp32: max|dlogit| (prefill) = {max_logit:.3g}, greedy agreement = {res['greedy_agreement']:.3f}, "
         f"identical = {same}/{len(PROMPTS)}, max|dhidden| = {max_hidden:.3g} "
         f"(relative to the position's max, positions >= 1: {max_hidden_rel:.3g})")
    return res


BENCH_TEXT = ("Australia is a country comprising the mainland of the Australian continent, the island of "
              "Tasmania and numerous smaller islands. ") * 12


def bench(model_dir: str, manifest: dict, files: list[str], threads: int, runs: int, prefill_tokens: int,
          decode_steps: int) -> None:
    """Prefill and decode tokens/s per graph, as test/bench/runtime.bench.ts measures them (a ~200-token
    chat prompt, logits for the last position only, then greedy steps), with intra-op spinning off.
    Runs alternate between the graphs (A B C A B C ...); the 1-minute load average is printed beside
    each figure."""
    import onnxruntime as ort
    from jinja2 import Template
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    text = Template(manifest["chat_template"]).render(
        messages=[{"role": "user", "content": f"Summarise: {BENCH_TEXT}"}], add_generation_prompt=True)
    prompt = tok(text, add_special_tokens=False)["input_ids"][:prefill_tokens]
    runners = {}
    for f in files:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        r = Runner.__new__(Runner)
        r.sess = ort.InferenceSession(os.path.join(model_dir, f), so, providers=["CPUExecutionProvider"])
        r.m, r.outputs = manifest, [o.name for o in r.sess.get_outputs()]
        r.forward(prompt[:8], r.empty())  # warm-up
        runners[f] = r
    res: dict[str, list] = {f: [] for f in files}
    for run in range(runs):
        for f, r in runners.items():
            t = time.perf_counter()
            logits, past = r.forward(prompt, r.empty())
            t1 = time.perf_counter()
            for _ in range(decode_steps):
                logits, past = r.forward([int(logits[0, -1].argmax())], past)
            t2 = time.perf_counter()
            load = os.getloadavg()[0]
            res[f].append((len(prompt) / (t1 - t), decode_steps / (t2 - t1), load))
            print(f"run {run} {f:24s} prefill {len(prompt) / (t1 - t):7.1f} tok/s  decode "
                  f"{decode_steps / (t2 - t1):6.1f} tok/s  load {load:.2f}", flush=True)
    for f, xs in res.items():
        print(f"median {f:24s} prefill {np.median([x[0] for x in xs]):7.1f} tok/s  decode "
              f"{np.median([x[1] for x in xs]):6.1f} tok/s  ({len(prompt)}-token prompt, {decode_steps} steps, "
              f"{threads} threads, loads {', '.join(f'{x[2]:.2f}' for x in xs)})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--gguf")
    ap.add_argument("--name", default="q4_1", help="precision name; writes model.<name>.onnx")
    ap.add_argument("--accuracy-level", type=int, default=4, choices=[0, 1, 2, 3, 4])
    ap.add_argument("--zero-points", default="centred", choices=["centred", "zero", "float"])
    ap.add_argument("--min-agreement", type=float, default=0.5)
    ap.add_argument("--no-manifest", action="store_true", help="do not record the variant in manifest.json")
    ap.add_argument("--bench", nargs="+", metavar="ONNX", help="only measure prefill/decode tokens/s of these graphs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--decode-steps", type=int, default=64)
    args = ap.parse_args()

    path = os.path.join(args.model_dir, "manifest.json")
    with open(path, encoding="utf8") as f:
        manifest = json.load(f)
    if args.bench:
        bench(args.model_dir, manifest, args.bench, args.threads, args.runs, 200, args.decode_steps)
        return 0
    if not args.gguf:
        ap.error("--gguf is required unless --bench")
    src = os.path.join(args.model_dir, manifest["onnx"])
    name = f"model.{args.name}.onnx"
    dst = os.path.join(args.model_dir, name)
    step(f"repacking {args.gguf} into {dst} (accuracy level {args.accuracy_level}, zero points {args.zero_points})")
    info = repack(src, dst + ".tmp.onnx", args.gguf, manifest, args.accuracy_level, args.zero_points)
    os.replace(dst + ".tmp.onnx", dst)
    step(f"wrote {name} ({os.path.getsize(dst) / 1e6:.0f} MB)")
    res = parity(src, dst, args.model_dir, manifest, args.name)
    if res["greedy_agreement"] < args.min_agreement:
        print(f"parity FAILED: greedy agreement {res['greedy_agreement']:.3f} < {args.min_agreement}", file=sys.stderr)
        return 1
    if args.no_manifest:
        return 0
    manifest.setdefault("precisions", {})[args.name] = {
        "onnx": name, **res, "accuracy_level": args.accuracy_level, "zero_points": args.zero_points,
        "source": os.path.basename(args.gguf), **info,
    }
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf8") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    step("manifest updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
