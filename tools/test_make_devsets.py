"""Tests of the dev set builder (no network): python -m unittest discover -s tools."""

from __future__ import annotations

import io
import json
import sys
import tarfile
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_devsets as md

EVAL = Path(__file__).resolve().parent.parent / "fixtures" / "eval"

SPHINX = """<html><body><div class="body" role="main">
<section id="faq"><h1>Programming FAQ<a class="headerlink" href="#faq">\u00b6</a></h1>
<section id="general"><h2>General</h2>
<section id="q1"><h3>How do I copy an object?<a class="headerlink" href="#q1">\u00b6</a></h3>
<p>In general, try <code class="docutils literal"><span class="pre">copy.copy()</span></code> for the general case.</p>
<p>For example:</p>
<div class="highlight-python3"><div class="highlight"><pre>new = copy.copy(x)</pre></div></div>
<p>Some objects can be copied more easily. Dictionaries have a \u201ccopy\u201d method:</p>
<pre>d.copy()</pre>
</section>
<section id="q2"><h3>Why is it called Python?</h3>
<p>See the next question.</p>
</section>
</section></section></div>
<div class="sphinxsidebar"><p>Not part of the page body at all, so never a distractor or an answer.</p></div>
</body></html>"""

SQLITE = """<html><body><div class="menu"><p>Home About Documentation Download</p></div>
<ol><li><a href="#q1">How do I create an AUTOINCREMENT field?</a></li></ol>
<a name="q1"></a>
<p><b>(1) How do I create an AUTOINCREMENT field?</b></p>
<blockquote><p>Short answer: A column declared INTEGER PRIMARY KEY will
  autoincrement.
<blockquote><pre>CREATE TABLE t1(a INTEGER PRIMARY KEY);</pre></blockquote>
<p>Note that the integer key is one greater than the largest key.</blockquote></li>
<a name="q2"></a>
<p><b>(2) What datatypes does SQLite support?</b></p>
<blockquote>SQLite uses dynamic typing.  Content can be stored as INTEGER,
  REAL, TEXT, BLOB, or as NULL.</blockquote></li>
</body></html>"""


def tiny_deb(files: dict[str, bytes]) -> bytes:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo("./" + name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    out = b"!<arch>\n"
    for name, blob in ((b"debian-binary", b"2.0\n"), (b"data.tar.xz", data.getvalue())):
        out += name.ljust(16) + b"0".ljust(12) + b"0".ljust(6) * 2 + b"100644".ljust(8)
        out += str(len(blob)).encode().ljust(10) + b"`\n" + blob + (b"\n" if len(blob) % 2 else b"")
    return out


class ParserTests(unittest.TestCase):
    def test_python_faq_takes_leaf_sections_without_code(self):
        pairs = md.python_faq({"faq/programming.html": SPHINX}, order=("programming",))
        self.assertEqual([q for q, _ in pairs], ["How do I copy an object?", "Why is it called Python?"])
        self.assertEqual(
            pairs[0][1],
            "In general, try copy.copy() for the general case. Some objects can be copied more easily. "
            'Dictionaries have a "copy" method.',
        )
        kept, dropped = md.usable(pairs)
        self.assertEqual(dropped, ["Why is it called Python?"])  # only a pointer elsewhere
        self.assertEqual(len(kept), 1)

    def test_sqlite_faq_pairs_question_with_its_blockquote(self):
        pairs = md.sqlite_faq(SQLITE)
        self.assertEqual(
            pairs,
            [
                (
                    "How do I create an AUTOINCREMENT field?",
                    (
                        "Short answer: A column declared INTEGER PRIMARY KEY will autoincrement. "
                        "Note that the integer key is one greater than the largest key."
                    ),
                ),
                (
                    "What datatypes does SQLite support?",
                    "SQLite uses dynamic typing. Content can be stored as INTEGER, REAL, TEXT, BLOB, or as NULL.",
                ),
            ],
        )

    def test_join_answer_keeps_whole_sentences_within_the_limit(self):
        paras = ["One short sentence here.", "A second sentence. A third one that is rather long."]
        self.assertEqual(md.join_answer(paras, limit=50), "One short sentence here. A second sentence.")
        self.assertEqual(md.join_answer(["It is called as"]), "It is called as")
        self.assertEqual(
            md.join_answer(["A sentence that is surely long enough to keep. It is called as"]),
            "A sentence that is surely long enough to keep.",
        )

    def test_distractors_are_main_content_paragraphs_not_answers_and_stable(self):
        para = "This paragraph explains a library function at length, which is what a memory looks like."
        page = f'<div role="main"><p>{para}</p><p>{para}</p><p>Too short.</p><p>An answer text that is long '
        page += "enough to pass every filter of the paragraph picker, but it is an answer.</p></div>"
        page += "<div><p>Outside the main part of the page, a sidebar paragraph that is long enough.</p></div>"
        cands = md.distractor_paragraphs({"a.html": page}, lambda n: True, lambda r: r.find("div", role="main"))
        self.assertEqual(len(cands), 3)
        answer = "An answer text that is long enough to pass every filter of the paragraph picker, but it is an answer."
        self.assertEqual(md.pick_distractors(cands, [answer], 10), [para])

    def test_deb_files_reads_the_data_archive(self):
        with tempfile.TemporaryDirectory() as tmp:
            deb = Path(tmp) / "x_1_all.deb"
            deb.write_bytes(tiny_deb({"usr/share/doc/x/faq.html": b"<p>hi</p>", "usr/share/doc/x/a.txt": b"no"}))
            self.assertEqual(md.deb_files(deb, "usr/share/doc/x/"), {"faq.html": "<p>hi</p>"})

    def test_noanswer_queries_differ_between_sets(self):
        seen = [q.lower() for qs in md.NOANSWER.values() for q in qs]
        self.assertEqual(len(seen), len(set(seen)))


class CommittedSetTests(unittest.TestCase):
    def test_sets_are_well_formed(self):
        for name in ("debfaq", "pyfaq", "sqlitefaq"):
            with self.subTest(name):
                corpus = [json.loads(line) for line in (EVAL / name / "corpus.jsonl").read_text().splitlines()]
                queries = [json.loads(line) for line in (EVAL / name / "queries.jsonl").read_text().splitlines()]
                ids = [d["id"] for d in corpus]
                self.assertEqual(len(ids), len(set(ids)))
                self.assertEqual(len({q["id"] for q in queries}), len(queries))
                self.assertTrue(all(d["text"].strip() for d in corpus))
                self.assertTrue(all(r in set(ids) for q in queries for r in q["relevant"]))
                noanswer = [q for q in queries if not q["relevant"]]
                self.assertEqual(len(noanswer), len(md.NOANSWER[name]))
                self.assertTrue(all(q["id"].startswith(f"{name}-na") for q in noanswer))
                self.assertIn(f"## {name}", (EVAL / "README.md").read_text())


if __name__ == "__main__":
    unittest.main()
