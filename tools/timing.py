#!/usr/bin/env python3
"""Time ONNX models in Python (ONNX Runtime), for choosing conversion options; not a test.

    python tools/timing.py MODEL.onnx [MODEL.onnx ...] [--threads 1] [--runs 200]

Cases: one short query (~12 tokens), a batch of 32 utterances, 10 (query, passage) pairs of ~60 tokens.
Models take turns run by run; prints wall-clock and process-CPU p50/p99 in milliseconds per case.
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
    "a surprise dinner at the Portuguese restaurant downtown with about twelve friends from university, "
    "and that the booking still needs a deposit."
)


def _feeds(sess, ids, mask, types) -> dict:
    wanted = {i.name for i in sess.get_inputs()}
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return {k: v for k, v in feeds.items() if k in wanted}


def _pct(samples: list[float]) -> str:
    return f"p50 {np.percentile(samples, 50):.2f} p99 {np.percentile(samples, 99):.2f}"


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
    sessions = [session(m, args.threads) for m in args.models]
    for name, (ids, mask, types) in cases.items():
        feeds = [_feeds(s, ids, mask, types) for s in sessions]
        wall: list[list[float]] = [[] for _ in sessions]
        cpu: list[list[float]] = [[] for _ in sessions]
        for run in range(args.runs + 5):
            # Models take turns on every run, so load from other processes hits them alike.
            for i, (sess, feed) in enumerate(zip(sessions, feeds)):
                w0, c0 = time.perf_counter(), time.process_time()
                sess.run(None, feed)
                if run >= 5:  # warm-up
                    wall[i].append((time.perf_counter() - w0) * 1e3)
                    cpu[i].append((time.process_time() - c0) * 1e3)
        for model, w, c in zip(args.models, wall, cpu):
            case = f"{name}[{ids.shape[0]}x{ids.shape[1]}] threads={args.threads}"
            print(f"{case} {model}: wall {_pct(w)} | cpu {_pct(c)} ms")


if __name__ == "__main__":
    main()
