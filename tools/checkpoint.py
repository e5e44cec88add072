"""Read an HF BERT checkpoint directory (model.safetensors + config.json + tokenizer.json).

Weights are returned under BertModel names ("embeddings...", "encoder.layer.N...", "pooler...",
plus "classifier..." for sequence classification): the "bert." prefix of
BertForSequenceClassification checkpoints is stripped so one graph builder serves both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file


class ConversionError(Exception):
    """A checkpoint, a conversion step or a verification failed; the message says which and why."""


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, raw: dict, origin: str) -> BertConfig:
        if raw.get("model_type", "bert") != "bert":
            raise ConversionError(f"{origin}: model_type is {raw.get('model_type')!r}, only 'bert' is supported")
        if raw.get("hidden_act", "gelu") != "gelu":
            raise ConversionError(f"{origin}: hidden_act {raw.get('hidden_act')!r} unsupported (only exact 'gelu')")
        if raw.get("position_embedding_type", "absolute") != "absolute":
            raise ConversionError(f"{origin}: only absolute position embeddings are supported")
        try:
            cfg = cls(
                vocab_size=int(raw["vocab_size"]),
                hidden_size=int(raw["hidden_size"]),
                num_hidden_layers=int(raw["num_hidden_layers"]),
                num_attention_heads=int(raw["num_attention_heads"]),
                intermediate_size=int(raw["intermediate_size"]),
                max_position_embeddings=int(raw["max_position_embeddings"]),
                type_vocab_size=int(raw.get("type_vocab_size", 2)),
                layer_norm_eps=float(raw.get("layer_norm_eps", 1e-12)),
            )
        except KeyError as e:
            raise ConversionError(f"{origin}: missing key {e}") from e
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ConversionError(f"{origin}: hidden_size is not a multiple of num_attention_heads")
        return cfg

    def hf_dict(self) -> dict:
        """HF-style config keys the Rust side and HF tools read."""
        return {
            "model_type": "bert",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size,
            "hidden_act": "gelu",
            "max_position_embeddings": self.max_position_embeddings,
            "type_vocab_size": self.type_vocab_size,
            "layer_norm_eps": self.layer_norm_eps,
            "position_embedding_type": "absolute",
            "pad_token_id": 0,
        }


def layer_keys(i: int) -> list[str]:
    p = f"encoder.layer.{i}."
    return [
        p + s
        for s in (
            "attention.self.query.weight",
            "attention.self.query.bias",
            "attention.self.key.weight",
            "attention.self.key.bias",
            "attention.self.value.weight",
            "attention.self.value.bias",
            "attention.output.dense.weight",
            "attention.output.dense.bias",
            "attention.output.LayerNorm.weight",
            "attention.output.LayerNorm.bias",
            "intermediate.dense.weight",
            "intermediate.dense.bias",
            "output.dense.weight",
            "output.dense.bias",
            "output.LayerNorm.weight",
            "output.LayerNorm.bias",
        )
    ]


EMBEDDING_KEYS = [
    "embeddings.word_embeddings.weight",
    "embeddings.position_embeddings.weight",
    "embeddings.token_type_embeddings.weight",
    "embeddings.LayerNorm.weight",
    "embeddings.LayerNorm.bias",
]
POOLER_KEYS = ["pooler.dense.weight", "pooler.dense.bias"]
CLASSIFIER_KEYS = ["classifier.weight", "classifier.bias"]


def required_keys(cfg: BertConfig, cross_encoder: bool) -> list[str]:
    keys = list(EMBEDDING_KEYS)
    for i in range(cfg.num_hidden_layers):
        keys += layer_keys(i)
    if cross_encoder:
        keys += POOLER_KEYS + CLASSIFIER_KEYS
    return keys


def check_weights(weights: dict[str, np.ndarray], cfg: BertConfig, cross_encoder: bool, origin: str) -> None:
    missing = [k for k in required_keys(cfg, cross_encoder) if k not in weights]
    if missing:
        raise ConversionError(f"{origin}: {len(missing)} tensors missing, first: {missing[:3]}")
    word = weights["embeddings.word_embeddings.weight"]
    if word.shape != (cfg.vocab_size, cfg.hidden_size):
        raise ConversionError(f"{origin}: word embeddings {word.shape} disagree with config")


def load_checkpoint(src: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Weights (float32, BertModel names) and the raw config dict of an HF checkpoint directory."""
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        if not (src / name).is_file():
            raise ConversionError(f"{src / name}: not found (an HF BERT checkpoint directory needs it)")
    raw = json.loads((src / "config.json").read_text())
    weights = {}
    for name, arr in load_file(str(src / "model.safetensors")).items():
        name = name.removeprefix("bert.")
        weights[name] = arr.astype(np.float32) if arr.dtype != np.int64 else arr
    return weights, raw
