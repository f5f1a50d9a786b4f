"""Make a tiny, randomly initialised causal LM of a given family, for testing the exporter.

The model has the real SmolLM2 tokenizer (copied from an exported model folder) so the whole
pipeline (export, manifest, TypeScript runtime) can run on it; its weights are random, so its text
means nothing. Nothing is downloaded: the config is built in code.

Usage: python make_tiny.py --family llama|mistral|qwen2|gpt2 --tokenizer-dir DIR --out DIR
"""
from __future__ import annotations

import argparse

import torch
from transformers import (AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
                          MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM)

SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=512)


def build(family: str, vocab: int, bos: int, eos: int) -> torch.nn.Module:
    ids = dict(vocab_size=vocab, bos_token_id=bos, eos_token_id=eos, pad_token_id=eos)
    if family == "llama":
        return LlamaForCausalLM(LlamaConfig(**SMALL, **ids, tie_word_embeddings=True))
    if family == "mistral":
        return MistralForCausalLM(MistralConfig(**SMALL, **ids, sliding_window=256))
    if family == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**SMALL, **ids))
    if family == "gpt2":
        return GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=512, **ids))
    raise SystemExit(f"unknown family {family}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", required=True, choices=["llama", "mistral", "qwen2", "gpt2"])
    ap.add_argument("--tokenizer-dir", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(args.tokenizer_dir)
    if args.family == "gpt2":
        tok.chat_template = None  # exercise the exporter's fallback template
    model = build(args.family, len(tok), tok.bos_token_id, tok.eos_token_id)
    model.save_pretrained(args.out)
    tok.save_pretrained(args.out)
    print(f"tiny {args.family}: {sum(p.numel() for p in model.parameters())} parameters in {args.out}")


if __name__ == "__main__":
    main()
