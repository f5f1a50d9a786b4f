"""Write the served weights as GGUF files for llama.cpp, so the runtime bench compares like with like.

The fp32 ONNX graph is the Q4_1 GGUF dequantised (export.py), so llama.cpp on the Q4_1 file runs
4-bit weights against our 32-bit ones. This script writes, from that same GGUF:

  f32   every tensor dequantised to float32: bit for bit the fp32 graph's weights (ours: fp32,
        fused-fp32).
  q8_0  the dequantised weights requantised to Q8_0 (block 32, one fp16 scale per block); tensors
        already Q8_0 (the tied token_embd / lm_head) are copied as they are; 1-D tensors (norms)
        stay float32. Ours at the same bit width: int8, fused-int8 (MatMulNBits 8-bit, block 32,
        asymmetric, from the same fp32 weights).

The Q4_1 file itself is the 4-bit pair of int4 / fused-int4. Metadata is copied field by field
(general.file_type updated), so llama.cpp loads the same tokenizer, rope and norms.

Usage: python gguf_variants.py --gguf SmolLM2-135M-Instruct.Q4_1.gguf --type f32|q8_0 --out FILE
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

FILE_TYPE = {"f32": 0, "q8_0": 7}  # llama_ftype: ALL_F32, MOSTLY_Q8_0


def convert(src: str, kind: str, out: str) -> None:
    import gguf
    from gguf import GGMLQuantizationType as Q

    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    tmp = f"{out}.tmp-{os.getpid()}"
    writer = gguf.GGUFWriter(tmp, arch)
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        kind_of = field.types[0]
        sub = field.types[-1] if kind_of == gguf.GGUFValueType.ARRAY else None
        value = FILE_TYPE[kind] if field.name == "general.file_type" else field.contents()
        writer.add_key_value(field.name, value, kind_of, sub_type=sub)
    for t in reader.tensors:
        if kind == "q8_0" and t.tensor_type == Q.Q8_0:
            writer.add_tensor(t.name, np.asarray(t.data), raw_dtype=Q.Q8_0)
            continue
        w = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32)
        if kind == "q8_0" and w.ndim >= 2 and w.shape[-1] % 32 == 0:
            writer.add_tensor(t.name, gguf.quants.quantize(w, Q.Q8_0), raw_dtype=Q.Q8_0)
        else:
            writer.add_tensor(t.name, w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--type", choices=sorted(FILE_TYPE), required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    convert(args.gguf, args.type, args.out)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB, {args.type})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
