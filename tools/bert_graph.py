"""Build a BERT ONNX graph from weights with onnx.helper (no torch, no exporter).

The node pattern follows what the PyTorch exporter emits for HF BERT (MatMul+Add projections,
Reshape/Transpose heads, Div by sqrt(d), additive mask, Softmax, erf GELU, LayerNormalization), so
onnxruntime.transformers.optimizer can recognise and fuse it.

Inputs: int64 input_ids, attention_mask, token_type_ids, each [batch, sequence] (dynamic).
Outputs: "last_hidden_state" [batch, sequence, hidden] (task "embed") or "logits"
[batch, num_labels] (task "cross-encoder": pooler dense+tanh on [CLS], then the classifier).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from checkpoint import BertConfig, check_weights
from onnx import TensorProto, helper, numpy_helper

OPSET = 17  # first opset with LayerNormalization
IR_VERSION = 8  # readable by older ONNX Runtime builds on boards
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# Classic BERT additive mask value; exp(-10000 - max) is exactly 0 in fp32, so padding cannot
# leak into real tokens and batched results equal one-by-one results.
MASK_VALUE = -10000.0


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, hint: str, value: np.ndarray) -> str:
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def weight(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, **attrs) -> str:
        out = self.name(hint or op_type)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out + "_node", **attrs))
        return out

    def linear(self, x: str, w: np.ndarray, b: np.ndarray, prefix: str) -> str:
        # HF Linear stores [out, in]; MatMul wants [in, out].
        wt = self.weight(prefix + ".weight_t", w.T)
        bias = self.weight(prefix + ".bias", b)
        return self.op("Add", [self.op("MatMul", [x, wt]), bias])

    def layer_norm(self, x: str, g: np.ndarray, b: np.ndarray, prefix: str, eps: float) -> str:
        return self.op(
            "LayerNormalization",
            [x, self.weight(prefix + ".weight", g), self.weight(prefix + ".bias", b)],
            axis=-1,
            epsilon=eps,
        )


def _encoder_layer(bld: _Builder, x: str, mask_bias: str, w: dict, cfg: BertConfig, i: int) -> str:
    p = f"encoder.layer.{i}."
    nh, hd = cfg.num_attention_heads, cfg.head_dim
    heads_shape = bld.const("heads_shape", np.array([0, 0, nh, hd], dtype=np.int64))
    merged_shape = bld.const("merged_shape", np.array([0, 0, cfg.hidden_size], dtype=np.int64))

    def proj(kind: str, perm: list[int]) -> str:
        y = bld.linear(x, w[p + f"attention.self.{kind}.weight"], w[p + f"attention.self.{kind}.bias"], p + kind)
        return bld.op("Transpose", [bld.op("Reshape", [y, heads_shape])], perm=perm)

    q = proj("query", [0, 2, 1, 3])
    k = proj("key", [0, 2, 3, 1])
    v = proj("value", [0, 2, 1, 3])
    scores = bld.op("MatMul", [q, k])
    scores = bld.op("Div", [scores, bld.const("sqrt_d", np.array(math.sqrt(hd), dtype=np.float32))])
    scores = bld.op("Add", [scores, mask_bias])
    probs = bld.op("Softmax", [scores], axis=-1)
    ctx = bld.op("Transpose", [bld.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
    ctx = bld.op("Reshape", [ctx, merged_shape])
    att = bld.linear(ctx, w[p + "attention.output.dense.weight"], w[p + "attention.output.dense.bias"], p + "attn_out")
    x1 = bld.layer_norm(
        bld.op("Add", [att, x]),
        w[p + "attention.output.LayerNorm.weight"],
        w[p + "attention.output.LayerNorm.bias"],
        p + "attn_ln",
        cfg.layer_norm_eps,
    )
    h = bld.linear(x1, w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"], p + "ffn_in")
    # Exact GELU as HF writes it: x * 0.5 * (1 + erf(x / sqrt(2))).
    erf = bld.op("Erf", [bld.op("Div", [h, bld.const("sqrt2", np.array(math.sqrt(2.0), dtype=np.float32))])])
    gelu = bld.op(
        "Mul",
        [
            bld.op("Mul", [h, bld.op("Add", [erf, bld.const("one", np.array(1.0, dtype=np.float32))])]),
            bld.const("half", np.array(0.5, dtype=np.float32)),
        ],
    )
    out = bld.linear(gelu, w[p + "output.dense.weight"], w[p + "output.dense.bias"], p + "ffn_out")
    return bld.layer_norm(
        bld.op("Add", [out, x1]),
        w[p + "output.LayerNorm.weight"],
        w[p + "output.LayerNorm.bias"],
        p + "out_ln",
        cfg.layer_norm_eps,
    )


def build_bert_model(w: dict[str, np.ndarray], cfg: BertConfig, task: str) -> onnx.ModelProto:
    if task not in ("embed", "cross-encoder"):
        raise ValueError(f"unknown task {task!r}")
    cross = task == "cross-encoder"
    check_weights(w, cfg, cross, "weights")
    bld = _Builder()
    ids, mask, types = INPUT_NAMES

    word = bld.op(
        "Gather", [bld.weight("embeddings.word_embeddings.weight", w["embeddings.word_embeddings.weight"]), ids]
    )
    seq_len = bld.op("Gather", [bld.op("Shape", [ids]), bld.const("one_i", np.array(1, dtype=np.int64))], axis=0)
    positions = bld.op(
        "Range",
        [bld.const("zero_i", np.array(0, dtype=np.int64)), seq_len, bld.const("step", np.array(1, dtype=np.int64))],
    )
    positions = bld.op("Unsqueeze", [positions, bld.const("axis0", np.array([0], dtype=np.int64))])
    pos = bld.op(
        "Gather",
        [bld.weight("embeddings.position_embeddings.weight", w["embeddings.position_embeddings.weight"]), positions],
    )
    typ = bld.op(
        "Gather",
        [bld.weight("embeddings.token_type_embeddings.weight", w["embeddings.token_type_embeddings.weight"]), types],
    )
    x = bld.op("Add", [bld.op("Add", [word, pos]), typ])
    x = bld.layer_norm(
        x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], "embeddings.LayerNorm", cfg.layer_norm_eps
    )

    # [batch, seq] -> [batch, 1, 1, seq] additive bias: 0 for tokens, MASK_VALUE for padding.
    # Two single-axis Unsqueezes, as the PyTorch exporter writes it: the optimizer's mask pattern.
    m = bld.op("Unsqueeze", [mask, bld.const("axis1", np.array([1], dtype=np.int64))])
    m = bld.op("Unsqueeze", [m, bld.const("axis2", np.array([2], dtype=np.int64))])
    m = bld.op("Cast", [m], to=TensorProto.FLOAT)
    m = bld.op("Sub", [bld.const("one_f", np.array(1.0, dtype=np.float32)), m])
    mask_bias = bld.op("Mul", [m, bld.const("mask_value", np.array(MASK_VALUE, dtype=np.float32))])

    for i in range(cfg.num_hidden_layers):
        x = _encoder_layer(bld, x, mask_bias, w, cfg, i)

    batch, seq = "batch", "sequence"
    if cross:
        cls = bld.op("Gather", [x, bld.const("cls_index", np.array(0, dtype=np.int64))], axis=1)
        pooled = bld.op("Tanh", [bld.linear(cls, w["pooler.dense.weight"], w["pooler.dense.bias"], "pooler.dense")])
        out = bld.linear(pooled, w["classifier.weight"], w["classifier.bias"], "classifier")
        out_name, out_shape = "logits", [batch, int(w["classifier.weight"].shape[0])]
    else:
        out, out_name, out_shape = x, "last_hidden_state", [batch, seq, cfg.hidden_size]
    bld.nodes.append(helper.make_node("Identity", [out], [out_name], name="output_identity"))

    graph = helper.make_graph(
        bld.nodes,
        "bert_" + task.replace("-", "_"),
        [helper.make_tensor_value_info(n, TensorProto.INT64, [batch, seq]) for n in INPUT_NAMES],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_shape)],
        initializer=bld.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="voicerag-tools")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model
