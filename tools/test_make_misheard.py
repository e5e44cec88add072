"""Tests of the misheard-names set builder: python -m unittest discover -s tools."""

from __future__ import annotations

import json
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_misheard as mm

EVAL = Path(__file__).resolve().parent.parent / "fixtures" / "eval"


class MisheardTest(unittest.TestCase):
    def test_names_are_words_capitalised_mid_sentence(self):
        corpus = [
            "We use Debian here. Install Debian with apt. What is it? The Debian way.",
            "What a day: dpkg runs. The FAQ and the SQL DELETE statement. Ubuntu once.",
        ]
        names = mm.names_of(corpus)
        self.assertIn("debian", names)
        # Sentence-initial, lower-case only, acronyms and one-off capitals are not names.
        for word in ["what", "dpkg", "delete", "ubuntu", "install"]:
            self.assertNotIn(word, names)

    def test_respelling_keeps_the_first_letter_changes_the_word_and_is_deterministic(self):
        for word in ["Python", "Debian", "Linux", "SQLite", "Knoppix"]:
            new = mm.respell(word, "q1")
            self.assertNotEqual(new.lower(), word.lower())
            self.assertEqual(new[0], word[0])
            self.assertEqual(new, mm.respell(word, "q1"))

    def test_sets_keep_ids_and_labels_and_twins_match(self):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            src = root / "toy"
            src.mkdir()
            corpus = [{"id": "a1", "text": "Install it with Debian tools. We like Debian a lot."},
                      {"id": "a2", "text": "The kernel is Linux. Run Linux on it."}]
            queries = [{"id": "q1", "text": "How do I install Debian?", "relevant": ["a1"]},
                       {"id": "q2", "text": "What is a kernel?", "relevant": ["a2"]},
                       {"id": "n1", "text": "How do I bake bread?", "relevant": []}]
            (src / "corpus.jsonl").write_text("".join(json.dumps(c) + "\n" for c in corpus))
            (src / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
            mm.build(root, "toy")
            first = (root / "toy-misheard" / "queries.jsonl").read_text()
            mm.build(root, "toy")
            self.assertEqual(first, (root / "toy-misheard" / "queries.jsonl").read_text())
            mis = [json.loads(l) for l in first.splitlines()]
            named = [json.loads(l) for l in (root / "toy-named" / "queries.jsonl").read_text().splitlines()]
            # q2 names nothing: left out; the no-answer query stays.
            self.assertEqual([q["id"] for q in mis], ["q1", "n1"])
            self.assertEqual([q["id"] for q in named], ["q1", "n1"])
            self.assertEqual(named[0]["text"], "How do I install Debian?")
            self.assertNotIn("Debian", mis[0]["text"])
            self.assertEqual(mis[0]["relevant"], ["a1"])
            self.assertEqual((root / "toy-misheard" / "corpus.jsonl").read_text(),
                             (src / "corpus.jsonl").read_text())

    def test_the_committed_sets_are_what_the_script_writes(self):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            for name in ["debfaq", "pyfaq", "sqlitefaq"]:
                (root / name).symlink_to(EVAL / name)
                mm.build(root, name)
                for kind in ["misheard", "named"]:
                    self.assertEqual((root / f"{name}-{kind}" / "queries.jsonl").read_text(),
                                     (EVAL / f"{name}-{kind}" / "queries.jsonl").read_text(), f"{name}-{kind}")


if __name__ == "__main__":
    unittest.main()
