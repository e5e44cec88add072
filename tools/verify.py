"""Check a converted ONNX model against the numpy reference; raise ConversionError when it is off.

Thresholds (issue 2): sentence embeddings (mean-pooled, normalised) cosine >= 0.9999 fp32 and
>= 0.99 int8; cross-encoder scores within 1e-3 absolute (fp32) and the same ranking per query (int8).
Each sample runs alone and inside a padded batch, so a mask bug cannot hide behind equal lengths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import reference
from checkpoint import BertConfig, ConversionError
from tokenizers import Tokenizer

SENTENCES = [
    "Remind me to call my sister about the birthday dinner on Friday.",
    "What did I say about the dentist appointment last week?",
    "I prefer window seats when I fly, and I am allergic to peanuts.",
    "ok",
    "The quarterly report is due on the third of March, and Tom is reviewing the numbers before then.",
    "Play something relaxing.",
]
QUERIES = ["when is my dentist appointment", "what food am I allergic to"]
PASSAGES = [
    "The user has a dentist appointment next Tuesday at 3 pm.",
    "The user is allergic to peanuts and shellfish.",
    "The user's sister lives in Lisbon and works as an architect.",
    "Yesterday the user asked for relaxing jazz while cooking.",
]

FP32_MIN_COSINE = 0.9999
INT8_MIN_COSINE = 0.99
FP32_MAX_SCORE_DIFF = 1e-3
# Only for models documented as untrained (bench-untrained-ce-L12): their [CLS] output is a chaotic
# function of the input, int8 noise reorders close scores, and the ranking means nothing anyway.
# They must still track the reference closely, so a broken quantization fails.
UNTRAINED_MIN_CORRELATION = 0.95
UNTRAINED_MAX_ERROR_FRACTION = 0.1


@dataclass
class VerifyResult:
    summary: str


def load_tokenizer(path: Path, max_length: int) -> Tokenizer:
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on bad JSON
        raise ConversionError(f"{path}: not a usable tokenizer.json ({e})") from e
    # The shipped MiniLM tokenizer pads and truncates to 128; the engines use real lengths.
    tok.no_padding()
    tok.enable_truncation(max_length)
    return tok


def batch_arrays(encodings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pad to the longest item, like the Rust engines do."""
    n = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(encodings), n), dtype=np.int64)
    mask = np.zeros_like(ids)
    types = np.zeros_like(ids)
    for i, e in enumerate(encodings):
        k = len(e.ids)
        ids[i, :k], mask[i, :k], types[i, :k] = e.ids, e.attention_mask, e.type_ids
    return ids, mask, types


def session(model_path: Path, threads: int = 1) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])


def _run(sess: ort.InferenceSession, ids, mask, types) -> np.ndarray:
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    wanted = {i.name for i in sess.get_inputs()}
    return sess.run(None, {k: v for k, v in feeds.items() if k in wanted})[0]


def verify_embedder(model_path: Path, w: dict, cfg: BertConfig, tok_path: Path, int8: bool) -> VerifyResult:
    tok = load_tokenizer(tok_path, cfg.max_position_embeddings)
    ids, mask, types = batch_arrays(tok.encode_batch(SENTENCES))
    ref = reference.mean_pool_normalize(reference.encode(w, cfg, ids, mask, types), mask)
    sess = session(model_path)
    batched = reference.mean_pool_normalize(_run(sess, ids, mask, types).astype(np.float64), mask)
    single = np.stack(
        [
            reference.mean_pool_normalize(
                _run(sess, ids[i : i + 1, :k], mask[i : i + 1, :k], types[i : i + 1, :k]).astype(np.float64),
                mask[i : i + 1, :k],
            )[0]
            for i, k in enumerate(mask.sum(1))
        ]
    )
    cos = min(float((batched * ref).sum(1).min()), float((single * ref).sum(1).min()))
    batch_gap = float(np.abs(batched - single).max())
    limit = INT8_MIN_COSINE if int8 else FP32_MIN_COSINE
    summary = f"min cosine vs reference {cos:.6f} (need >= {limit}), max |batched - single| {batch_gap:.2e}"
    if not cos >= limit:
        raise ConversionError("verification failed: " + summary)
    return VerifyResult(summary)


def verify_cross_encoder(
    model_path: Path, w: dict, cfg: BertConfig, tok_path: Path, int8: bool, untrained: bool = False
) -> VerifyResult:
    tok = load_tokenizer(tok_path, cfg.max_position_embeddings)
    pairs = [(q, p) for q in QUERIES for p in PASSAGES]
    ids, mask, types = batch_arrays(tok.encode_batch(pairs))
    ref = reference.cross_encoder_logits(w, cfg, ids, mask, types)[:, 0]
    sess = session(model_path)
    batched = _run(sess, ids, mask, types)[:, 0].astype(np.float64)
    single = np.array(
        [
            _run(sess, ids[i : i + 1, :k], mask[i : i + 1, :k], types[i : i + 1, :k])[0, 0]
            for i, k in enumerate(mask.sum(1))
        ],
        dtype=np.float64,
    )
    diff = max(float(np.abs(batched - ref).max()), float(np.abs(single - ref).max()))
    per_query = len(PASSAGES)
    same_rank = all(
        np.array_equal(np.argsort(-ref[i : i + per_query]), np.argsort(-got[i : i + per_query]))
        for got in (batched, single)
        for i in range(0, len(pairs), per_query)
    )
    spread = float(min(np.ptp(ref[i : i + per_query]) for i in range(0, len(pairs), per_query)))
    summary = (
        f"max |score - reference| {diff:.2e}, same ranking per query: {same_rank}, "
        f"reference score spread per query >= {spread:.3g}, max |batched - single| {np.abs(batched - single).max():.2e}"
    )
    corr = min(float(np.corrcoef(ref, got)[0, 1]) for got in (batched, single))
    summary += f", correlation with reference {corr:.4f}"
    if not int8:
        ok = diff <= FP32_MAX_SCORE_DIFF and same_rank
    elif untrained:
        ok = corr >= UNTRAINED_MIN_CORRELATION and diff <= UNTRAINED_MAX_ERROR_FRACTION * float(np.ptp(ref))
        summary += (
            f" (untrained model: need correlation >= {UNTRAINED_MIN_CORRELATION},"
            f" error <= {UNTRAINED_MAX_ERROR_FRACTION} x score range)"
        )
    else:
        ok = same_rank
    if not ok:
        raise ConversionError("verification failed: " + summary)
    return VerifyResult(summary)


def verify(
    model_path: Path, w: dict, cfg: BertConfig, task: str, tok_path: Path, int8: bool, untrained: bool = False
) -> VerifyResult:
    if task == "embed":
        return verify_embedder(model_path, w, cfg, tok_path, int8)
    return verify_cross_encoder(model_path, w, cfg, tok_path, int8, untrained)
