#!/usr/bin/env python3
"""Convert an HF BERT checkpoint directory into an HF-layout ONNX model directory.

    python tools/convert.py SRC_DIR OUT_DIR --task embed|cross-encoder [--precision int8|fp32] [--optimize]

SRC_DIR holds model.safetensors, config.json and tokenizer.json. OUT_DIR gets model.onnx,
config.json (HF style) and tokenizer.json (copied as shipped). Steps: build the fp32 graph, check it
against the numpy reference, optionally run ONNX Runtime's BERT optimizer, quantize to int8 with
quantize_dynamic, check again. Any failed check exits non-zero and leaves OUT_DIR untouched.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from bert_graph import build_bert_model
from checkpoint import BertConfig, ConversionError, load_checkpoint
from outliers import split_outliers
from verify import batch_arrays, load_tokenizer, verify

# Calibration text for outlier detection; deliberately not the verification samples.
CALIBRATION = [
    "Hello there, how are you doing today?",
    "Book a table for two at the Italian place near the office tomorrow evening.",
    "my name is Anna",
    "Can you turn the lights off in the kitchen",
    "What's the weather going to be like this weekend in Berlin?",
    "yes",
]
CALIBRATION_PASSAGE = "The user said they moved to Berlin in May and work as a nurse at the city hospital."


def optimize_bert(src: Path, dst: Path, cfg: BertConfig) -> dict:
    """ONNX Runtime's transformer fusions (Attention, SkipLayerNorm, Gelu...); returns fused op counts."""
    from onnxruntime.transformers.optimizer import optimize_model

    opt = optimize_model(
        str(src),
        model_type="bert",
        num_heads=cfg.num_attention_heads,
        hidden_size=cfg.hidden_size,
        opt_level=0,  # python fusions only: the result stays portable across execution providers
    )
    opt.save_model_to_file(str(dst))
    return {k: v for k, v in opt.get_fused_operator_statistics().items() if v}


def calibration_feeds(tokenizer_json: Path, task: str) -> list[dict]:
    tok = load_tokenizer(tokenizer_json, 512)
    feeds = []
    for text in CALIBRATION:
        enc = tok.encode(text, CALIBRATION_PASSAGE) if task == "cross-encoder" else tok.encode(text)
        ids, mask, types = batch_arrays([enc])
        feeds.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
    return feeds


def quantize_int8(src: Path, dst: Path, keep_fp32: list[str]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quantize_dynamic logs a generic "consider pre-processing" warning on every call; our checks
    # after quantization are what matter, so keep the make output readable.
    logging.getLogger().setLevel(logging.ERROR)
    # Per-channel signed int8 weights: per-tensor scales lost up to 0.02 of cosine on MiniLM.
    # DefaultTensorType lets quantization pass over fused com.microsoft ops left by the optimizer.
    quantize_dynamic(
        str(src),
        str(dst),
        weight_type=QuantType.QInt8,
        per_channel=True,
        nodes_to_exclude=keep_fp32,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def convert_weights(
    weights: dict[str, np.ndarray],
    raw_config: dict,
    tokenizer_json: Path,
    out_dir: Path,
    task: str,
    precision: str,
    optimize: bool,
    extra_files: dict[str, str] | None = None,
    untrained: bool = False,
    log=print,
) -> list[str]:
    """Build, check, (optimize, quantize, check) and write OUT_DIR; returns the check summaries."""
    cfg = BertConfig.from_dict(raw_config, "config")
    cross = task == "cross-encoder"
    summaries = []
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        fp32 = tmp / "model-fp32.onnx"
        onnx.save_model(build_bert_model(weights, cfg, task), str(fp32))
        summaries.append("fp32: " + verify(fp32, weights, cfg, task, tokenizer_json, int8=False).summary)
        log(summaries[-1])
        final = fp32
        if optimize:
            opt = tmp / "model-opt.onnx"
            fused = optimize_bert(fp32, opt, cfg)
            log(f"optimizer fused: {fused}")
            summaries.append("optimized fp32: " + verify(opt, weights, cfg, task, tokenizer_json, int8=False).summary)
            log(summaries[-1])
            final = opt
        if precision == "int8":
            split = tmp / "model-split.onnx"
            n_split, side = split_outliers(final, split, calibration_feeds(tokenizer_json, task))
            log(f"outlier channels split out of {n_split} activations ({len(side)} fp32 side MatMuls)")
            q = tmp / "model-int8.onnx"
            quantize_int8(split, q, side)
            summaries.append(
                "int8: " + verify(q, weights, cfg, task, tokenizer_json, int8=True, untrained=untrained).summary
            )
            log(summaries[-1])
            final = q

        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(final, out_dir / "model.onnx")
    config = dict(raw_config)
    config.update(cfg.hf_dict())
    config["architectures"] = ["BertForSequenceClassification" if cross else "BertModel"]
    if cross:
        config["num_labels"] = int(weights["classifier.weight"].shape[0])
    config["onnx"] = {
        "task": task,
        "precision": precision,
        "ort_transformer_optimizer": optimize,
        "int8_scheme": "quantize_dynamic, per-channel QInt8 weights, outlier activation channels in fp32"
        if precision == "int8"
        else None,
        "inputs": ["input_ids", "attention_mask", "token_type_ids"],
        "output": "logits" if cross else "last_hidden_state",
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    shutil.copyfile(tokenizer_json, out_dir / "tokenizer.json")
    for name, text in (extra_files or {}).items():
        (out_dir / name).write_text(text)
    return summaries


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path, help="HF checkpoint dir (model.safetensors, config.json, tokenizer.json)")
    ap.add_argument("out", type=Path, help="output model dir")
    ap.add_argument("--task", choices=["embed", "cross-encoder"], required=True)
    ap.add_argument("--precision", choices=["int8", "fp32"], default="int8")
    ap.add_argument(
        "--optimize",
        action="store_true",
        help="run onnxruntime.transformers.optimizer first (measured slower on MiniLM, so off by default)",
    )
    args = ap.parse_args(argv)
    try:
        weights, raw = load_checkpoint(args.src)
        convert_weights(weights, raw, args.src / "tokenizer.json", args.out, args.task, args.precision, args.optimize)
    except ConversionError as e:
        print(f"convert.py: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
