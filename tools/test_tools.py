"""Tests of the model tooling: python -m unittest discover -s tools (or `make test-tools`)."""

from __future__ import annotations

import json
import sys
import tempfile
import unittest
from pathlib import Path

import numpy as np
import onnx
from safetensors.numpy import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))

import convert
import make_bench_ce
import make_fixtures
import outliers
import verify
from bert_graph import build_bert_model
from checkpoint import BertConfig, ConversionError, layer_keys, load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "models"
TINY_TOKENIZER = FIXTURES / "tiny-embedder" / "tokenizer.json"


def tiny(cross: bool, seed: int = 7) -> tuple[dict, dict]:
    vocab = json.loads(TINY_TOKENIZER.read_text())["model"]["vocab"]
    config = dict(make_fixtures.CONFIG, vocab_size=len(vocab))
    return make_fixtures.tiny_weights(len(vocab), np.random.default_rng(seed), cross), config


def run(model_path: Path, texts) -> np.ndarray:
    tok = verify.load_tokenizer(TINY_TOKENIZER, 512)
    ids, mask, types = verify.batch_arrays(tok.encode_batch(texts))
    return verify._run(verify.session(model_path), ids, mask, types)


class FixtureTests(unittest.TestCase):
    def test_committed_fixtures_regenerate_byte_for_byte(self):
        with tempfile.TemporaryDirectory() as tmp:
            sys.argv = ["make_fixtures.py", "--out", tmp]
            self.assertEqual(make_fixtures.main(), 0)
            for name in ("tiny-embedder", "tiny-cross-encoder"):
                for f in ("model.onnx", "tokenizer.json", "config.json"):
                    self.assertEqual(
                        (Path(tmp) / name / f).read_bytes(), (FIXTURES / name / f).read_bytes(), f"{name}/{f}"
                    )

    def test_fixture_tokenizer_has_minilm_layout(self):
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(TINY_TOKENIZER))
        enc = tok.encode("Hello there", "the dentist")
        self.assertEqual(enc.tokens[0], "[CLS]")
        self.assertEqual(enc.ids[0], 2)
        # Shipped like MiniLM's: fixed padding to 128, which the engines must switch off.
        self.assertEqual(len(enc.ids), 128)
        real = [(tok_, t) for tok_, t, m in zip(enc.tokens, enc.type_ids, enc.attention_mask) if m]
        # [CLS] hello there [SEP] (type 0) the dentist... [SEP] (type 1), like BERT pair encoding.
        self.assertEqual([t for _, t in real], sorted(t for _, t in real))
        self.assertEqual(real[-1], ("[SEP]", 1))
        self.assertEqual(sum(1 for tok_, _ in real if tok_ == "[SEP]"), 2)
        self.assertEqual(tok.encode("zzqx").tokens[1:3], ["z", "##z"])

    def test_fixture_config_matches_model(self):
        for name, output in (("tiny-embedder", "last_hidden_state"), ("tiny-cross-encoder", "logits")):
            cfg = json.loads((FIXTURES / name / "config.json").read_text())
            model = onnx.load(str(FIXTURES / name / "model.onnx"))
            self.assertEqual([o.name for o in model.graph.output], [output])
            self.assertGreaterEqual(cfg["max_position_embeddings"], 512)
            word = next(i for i in model.graph.initializer if i.name == "embeddings.word_embeddings.weight")
            self.assertEqual(list(word.dims), [cfg["vocab_size"], cfg["hidden_size"]])


class ConversionTests(unittest.TestCase):
    def test_embedder_padding_does_not_change_results(self):
        w, config = tiny(cross=False)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "m.onnx"
            onnx.save(build_bert_model(w, BertConfig.from_dict(config, "t"), "embed"), str(path))
            texts = ["ok", "remind me to call my sister about the party on friday"]
            batched = run(path, texts)
            alone = run(path, texts[:1])
        np.testing.assert_allclose(batched[0, : alone.shape[1]], alone[0], atol=1e-5)

    def test_verification_rejects_a_graph_that_disagrees_with_the_weights(self):
        w, config = tiny(cross=True)
        cfg = BertConfig.from_dict(config, "t")
        broken = dict(w)
        broken["encoder.layer.1.attention.self.value.weight"] = w["encoder.layer.1.attention.self.value.weight"] * 1.5
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "m.onnx"
            onnx.save(build_bert_model(broken, cfg, "cross-encoder"), str(path))
            with self.assertRaises(ConversionError):
                verify.verify(path, w, cfg, "cross-encoder", TINY_TOKENIZER, int8=False)
            verify.verify(path, broken, cfg, "cross-encoder", TINY_TOKENIZER, int8=False)  # consistent: passes

    def test_cli_converts_a_checkpoint_dir_and_names_missing_files(self):
        w, config = tiny(cross=False)
        with tempfile.TemporaryDirectory() as tmp:
            src, out = Path(tmp) / "ckpt", Path(tmp) / "out"
            src.mkdir()
            save_file(w, str(src / "model.safetensors"))
            (src / "config.json").write_text(json.dumps(config))
            self.assertEqual(convert.main([str(src), str(out), "--task", "embed", "--precision", "fp32"]), 1)
            self.assertFalse(out.exists())  # no tokenizer.json: nothing written
            (src / "tokenizer.json").write_bytes(TINY_TOKENIZER.read_bytes())
            self.assertEqual(convert.main([str(src), str(out), "--task", "embed", "--precision", "fp32"]), 0)
            self.assertEqual(sorted(p.name for p in out.iterdir()), ["config.json", "model.onnx", "tokenizer.json"])
            weights, _ = load_checkpoint(src)
            self.assertEqual(len(weights), len(w))

    def test_outlier_split_is_exact_in_fp32_and_finds_a_planted_channel(self):
        w, config = tiny(cross=False)
        # A massive embedding channel, like MiniLM's, reaches the first layer's Q/K/V input.
        w["embeddings.LayerNorm.bias"] = w["embeddings.LayerNorm.bias"].copy()
        w["embeddings.LayerNorm.bias"][5] = 40.0
        cfg = BertConfig.from_dict(config, "t")
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "a.onnx", Path(tmp) / "b.onnx"
            onnx.save(build_bert_model(w, cfg, "embed"), str(src))
            feeds = convert.calibration_feeds(TINY_TOKENIZER, "embed")
            split, side = outliers.split_outliers(src, dst, feeds)
            self.assertGreaterEqual(split, 1)
            # Layer 0's query, key and value projections all read the planted channel.
            self.assertGreaterEqual(len(side), 3)
            texts = ["what did i say about the dentist", "ok"]
            np.testing.assert_allclose(run(dst, texts), run(src, texts), atol=1e-4)


class BenchModelTests(unittest.TestCase):
    def test_each_minilm_layer_is_used_twice(self):
        src = {}
        rng = np.random.default_rng(0)
        for key in make_bench_ce.EMBEDDING_KEYS:
            src[key] = rng.normal(size=(3,)).astype(np.float32)
        for i in range(6):
            for key in layer_keys(i):
                src[key] = np.full((2,), float(i), dtype=np.float32)
        w = make_bench_ce.bench_weights(src, hidden=4, seed=1)
        for i in range(12):
            self.assertEqual(w[f"encoder.layer.{i}.output.dense.weight"][0], float(i // 2))
        self.assertEqual(w["classifier.weight"].shape, (1, 4))
        again = make_bench_ce.bench_weights(src, hidden=4, seed=1)
        np.testing.assert_array_equal(w["pooler.dense.weight"], again["pooler.dense.weight"])


if __name__ == "__main__":
    unittest.main()
