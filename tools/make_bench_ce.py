#!/usr/bin/env python3
"""Build models/bench-untrained-ce-L12: a cross-encoder with the ms-marco-MiniLM-L-12-v2 shape.

    python tools/make_bench_ce.py MINILM_CHECKPOINT_DIR OUT_DIR [--seed 12]

No trained cross-encoder is available from a package registry here, so this model exists only to
measure rerank cost on the real shape (12 layers, hidden 384, 12 heads, intermediate 1536): each
of all-MiniLM-L6-v2's 6 encoder layers is used twice in a row, and the pooler and the one-logit
classifier head are drawn from a fixed seed. Its scores rank nothing; its README says so.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from checkpoint import EMBEDDING_KEYS, ConversionError, layer_keys, load_checkpoint
from convert import convert_weights

LAYERS = 12
# Larger than BERT's 0.02 init so scores spread enough for the int8 ranking check to mean something.
HEAD_STD = 0.2

README = """# bench-untrained-ce-L12: benchmark only, ranks nothing

This is NOT a trained reranker. It has the shape of cross-encoder/ms-marco-MiniLM-L-12-v2
(BERT, 12 layers, hidden 384, 12 heads, intermediate 1536, vocab 30522, one logit) so that
rerank latency can be measured on the real shape. Its encoder layers are all-MiniLM-L6-v2's six
layers, each used twice; its pooler and classifier are random (numpy seed {seed}, std {std}).
Its scores carry no relevance signal: never use it to rank anything. Because its [CLS] output is
a chaotic function of the input, int8 noise also reorders close scores: the int8 check for this
model requires correlation with the reference, not identical ranking (`make setup` prints the
measured figures).

Built by `make setup` with `tools/make_bench_ce.py` (int8, same conversion and checks as every
model here). To rerank for real, convert a trained cross-encoder checkpoint with
`tools/convert.py SRC OUT --task cross-encoder`.
"""


def bench_weights(src: dict[str, np.ndarray], hidden: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = {k: src[k] for k in EMBEDDING_KEYS}
    for i in range(LAYERS):
        for dst_key, src_key in zip(layer_keys(i), layer_keys(i // 2)):
            w[dst_key] = src[src_key]
    w["pooler.dense.weight"] = rng.normal(0.0, HEAD_STD, (hidden, hidden)).astype(np.float32)
    w["pooler.dense.bias"] = np.zeros(hidden, dtype=np.float32)
    w["classifier.weight"] = rng.normal(0.0, HEAD_STD, (1, hidden)).astype(np.float32)
    w["classifier.bias"] = np.zeros(1, dtype=np.float32)
    return w


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path, help="all-MiniLM-L6-v2 checkpoint dir")
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=12)
    args = ap.parse_args()
    try:
        src, raw = load_checkpoint(args.src)
        cfg = dict(raw, num_hidden_layers=LAYERS, _name_or_path="voicerag/bench-untrained-ce-L12")
        convert_weights(
            bench_weights(src, int(raw["hidden_size"]), args.seed),
            cfg,
            args.src / "tokenizer.json",
            args.out,
            "cross-encoder",
            "int8",
            optimize=False,
            extra_files={"README.md": README.format(seed=args.seed, std=HEAD_STD)},
            untrained=True,
        )
    except ConversionError as e:
        print(f"make_bench_ce.py: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
