#!/usr/bin/env python3
"""Time ONNX models in Python (ONNX Runtime), for choosing conversion options; not a test.

    python tools/timing.py MODEL.onnx [MODEL.onnx ...] [--threads 1] [--runs 200]

Cases: one short query (~12 tokens), a batch of 32 utterances, 10 (query, passage) pairs of ~60 tokens.
Prints p50 and p99 in milliseconds per case.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from verify import batch_arrays, load_tokenizer, session

SHORT_QUERY = "what did I tell you about my sister's birthday party"
UTTERANCES = [
    f"utterance {i}: remind me to buy milk, eggs and bread on the way home from work"[: 30 + 2 * i] for i in range(32)
]
PASSAGE = (
    "The user mentioned that their sister Maria is turning thirty next Saturday and that they are planning "
    "a surprise dinner at the Portuguese restaurant downtown with about twelve friends from university."
)


def _time(sess, feeds: dict, runs: int) -> tuple[float, float]:
    wanted = {i.name for i in sess.get_inputs()}
    feeds = {k: v for k, v in feeds.items() if k in wanted}
    for _ in range(5):
        sess.run(None, feeds)
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feeds)
        samples.append((time.perf_counter() - t) * 1e3)
    return float(np.percentile(samples, 50)), float(np.percentile(samples, 99))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--tokenizer", type=Path, help="defaults to tokenizer.json next to the first model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    tok = load_tokenizer(args.tokenizer or args.models[0].parent / "tokenizer.json", 512)
    cases = {
        "query": batch_arrays([tok.encode(SHORT_QUERY)]),
        "batch32": batch_arrays(tok.encode_batch(UTTERANCES)),
        "pairs10x60": batch_arrays(tok.encode_batch([(SHORT_QUERY, PASSAGE)] * 10)),
    }
    for model in args.models:
        sess = session(model, args.threads)
        parts = []
        for name, (ids, mask, types) in cases.items():
            p50, p99 = _time(sess, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}, args.runs)
            parts.append(f"{name}[{ids.shape[0]}x{ids.shape[1]}] p50 {p50:.2f} p99 {p99:.2f}")
        print(f"{model} threads={args.threads}: " + "; ".join(parts))


if __name__ == "__main__":
    main()
