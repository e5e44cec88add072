"""Reference BERT forward pass in numpy (float64), written from the weights, independent of the graph.

Used to check every converted model: it shares no code with bert_graph.py, so a wiring mistake in
the graph shows up as a mismatch rather than being reproduced on both sides.
"""

from __future__ import annotations

import math

import numpy as np
from checkpoint import BertConfig

_erf = np.frompyfunc(math.erf, 1, 1)


def _gelu(x: np.ndarray) -> np.ndarray:
    return x * 0.5 * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def _layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def _dense(x: np.ndarray, w: dict, name: str) -> np.ndarray:
    return x @ w[name + ".weight"].astype(np.float64).T + w[name + ".bias"]


def encode(w: dict, cfg: BertConfig, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
    """last_hidden_state [batch, seq, hidden] in float64."""
    b, s = ids.shape
    x = (
        w["embeddings.word_embeddings.weight"][ids].astype(np.float64)
        + w["embeddings.position_embeddings.weight"][np.arange(s)][None]
        + w["embeddings.token_type_embeddings.weight"][types]
    )
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], cfg.layer_norm_eps)
    nh, hd = cfg.num_attention_heads, cfg.head_dim
    # Masked keys get -inf: the true model ignores padding entirely.
    key_bias = np.where(mask[:, None, None, :] > 0, 0.0, -np.inf)

    def heads(t: np.ndarray) -> np.ndarray:
        return t.reshape(b, s, nh, hd).transpose(0, 2, 1, 3)

    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}."
        q = heads(_dense(x, w, p + "attention.self.query"))
        k = heads(_dense(x, w, p + "attention.self.key"))
        v = heads(_dense(x, w, p + "attention.self.value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd) + key_bias
        scores -= scores.max(-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(b, s, cfg.hidden_size)
        x = _layer_norm(
            _dense(ctx, w, p + "attention.output.dense") + x,
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
            cfg.layer_norm_eps,
        )
        h = _gelu(_dense(x, w, p + "intermediate.dense"))
        x = _layer_norm(
            _dense(h, w, p + "output.dense") + x,
            w[p + "output.LayerNorm.weight"],
            w[p + "output.LayerNorm.bias"],
            cfg.layer_norm_eps,
        )
    return x


def mean_pool_normalize(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Attention-masked mean pooling, L2-normalised: what the Rust embedder does with last_hidden_state."""
    m = mask[..., None].astype(np.float64)
    pooled = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


def cross_encoder_logits(w: dict, cfg: BertConfig, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
    """Sequence-classification logits [batch, num_labels] in float64."""
    cls = encode(w, cfg, ids, mask, types)[:, 0]
    pooled = np.tanh(_dense(cls, w, "pooler.dense"))
    return _dense(pooled, w, "classifier")
