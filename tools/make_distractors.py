#!/usr/bin/env python3
"""Build a retrieval-scale variant of a dev set: its corpus "inside N memories".

Usage: tools/make_distractors.py SET_DIR OUT_DIR [--count N] [--cache DIR]

SET_DIR holds corpus.jsonl ({"id","text"} lines) and queries.jsonl ({"id","text","relevant"} lines).
OUT_DIR/corpus.jsonl is the set's corpus followed by N distractor paragraphs {"id": "distractor-<n>", "text": ...};
OUT_DIR/queries.jsonl is the set's queries copied unchanged. Every relevant id stays in the corpus, so the scores
measure how well the set's answers are still found among N unrelated but real English paragraphs.

Distractors are prose paragraphs taken from the HTML of Debian documentation packages, fetched with
`apt-get download` (needs a prior `apt-get update`) and unpacked with `dpkg-deb -x` into the cache directory
(a temporary one by default; pass --cache to reuse the downloads between runs).

Packages (Debian 12 "bookworm"; the versions this script was written and checked against):
    debian-reference-en   2.100              Debian Reference, English HTML
    debian-handbook       11.20220922        The Debian Administrator's Handbook (en-US HTML only)
    python-django-doc     3:3.2.25-0+deb12u7 Django documentation
    postgresql-doc-15     15.20-0+deb12u1    PostgreSQL 15 documentation (not the release notes)
    sphinx-doc            5.3.0-4            Sphinx documentation
With these versions the pool is about 14,000 distinct clean paragraphs (the default --count is 10000).
Not used on purpose, because a dev set is built from them: debian-faq (debfaq), python3.11-doc / python3-doc (pyfaq),
sqlite3-doc (sqlitefaq) and git-doc. Paragraphs that are also in the set's corpus are left out all the same.

The output is deterministic for given package versions: paragraphs are deduplicated, ordered by the SHA-256 of
their text and the first N are taken. The versions actually used are printed; when apt no longer offers a pinned
version the current candidate is used and a warning says so, since the distractors then change.
"""

from __future__ import annotations

import argparse
import hashlib
import html.parser
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# (package, pinned version, HTML directory inside the package, files to skip by name pattern)
PACKAGES: list[tuple[str, str, str, str]] = [
    ("debian-reference-en", "2.100", "usr/share/debian-reference", r"^index\.en\.html$"),
    ("debian-handbook", "11.20220922", "usr/share/doc/debian-handbook/html/en-US", r"^(index|ix01)\.html$"),
    (
        "python-django-doc",
        "3:3.2.25-0+deb12u7",
        "usr/share/doc/python-django-doc/html",
        r"^(genindex|py-modindex|search|contents)\.html$",
    ),
    (
        "postgresql-doc-15",
        "15.20-0+deb12u1",
        "usr/share/doc/postgresql-doc-15/html",
        r"^(bookindex|index|legalnotice|release-.*)\.html$",
    ),
    ("sphinx-doc", "5.3.0-4", "usr/share/doc/sphinx-doc/html", r"^(genindex|py-modindex|search|contents)\.html$"),
]
# Directories (relative to the HTML root) never read: build artefacts, sources of the pages, shared boilerplate.
SKIP_DIRS = {"_sources", "_static", "_images", "_downloads", "_modules", "Common_Content", "images"}

MIN_CHARS = 80
MAX_CHARS = 1200
MIN_WORDS = 12
MIN_LETTER_SHARE = 0.9  # letters and spaces among all characters
MIN_WORD_SHARE = 0.8  # plain words (no digits, no inner capitals or dots) among all words
BLOCK_TAGS = {"p", "li", "dd"}  # plus <div class="para"> (DocBook/Publican output of the Debian Handbook)
DROP_TAGS = {"pre", "script", "style", "table"}  # content dropped; a block holding one is dropped too
CODE_TAGS = {"code", "kbd", "samp", "tt", "var"}  # inline code: kept as text but measured
MAX_CODE_SHARE = 0.15  # a block whose inline code is more than this share of its text is not prose
JUNK_RE = re.compile(
    r"(previous topic|next topic|this page|report a bug|show source|copyright \(c\)|copyright ©|\u00a9|"
    r"all rights reserved|table of contents|click here|https?://|www\.|@)",
    re.IGNORECASE,
)
CODE_RE = re.compile(r"[{}<>=$#;|\\_~^`]|\(\)|::|->|\b\w+\.\w+\(|--|\s-\w")
WORD_RE = re.compile(r"[A-Za-z][a-z']*")
TYPOGRAPHY = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "-",
        "\u2014": " - ",
        "\u00a0": " ",
        "\u2026": "...",
        "\u00b6": "",
    }
)


class BlockParser(html.parser.HTMLParser):
    """Collects the text of paragraph-like blocks; nested blocks are emitted separately, code blocks are dropped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        # Open elements that matter: [tag, text parts or None for a plain <div>, inline code chars, dropped?]
        self.stack: list[list] = []
        self.drop_depth = 0
        self.code_depth = 0

    def _block(self) -> list | None:
        for entry in reversed(self.stack):
            if entry[1] is not None:
                return entry
        return None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in DROP_TAGS:
            self.drop_depth += 1
            block = self._block()
            if block is not None:
                block[3] = True
        elif tag in CODE_TAGS:
            self.code_depth += 1
        elif tag in BLOCK_TAGS or tag == "div":
            if tag == "p" and self.stack and self.stack[-1][0] == "p":
                self._pop()  # an unclosed <p> ends where the next one starts
            collect = tag != "div" or "para" in (dict(attrs).get("class") or "").split()
            self.stack.append([tag, [] if collect else None, 0, False])
        elif tag == "br":
            self.handle_data(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.handle_data(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in DROP_TAGS:
            self.drop_depth = max(0, self.drop_depth - 1)
        elif tag in CODE_TAGS:
            self.code_depth = max(0, self.code_depth - 1)
        elif (tag in BLOCK_TAGS or tag == "div") and any(entry[0] == tag for entry in self.stack):
            # Close up to and including the innermost open element of this tag; a stray end tag is ignored.
            while self._pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        block = self._block()
        if block is not None and not self.drop_depth:
            block[1].append(data)
            if self.code_depth:
                block[2] += len(data.strip())

    def _pop(self) -> str:
        tag, parts, code_chars, dropped = self.stack.pop()
        if parts is not None and not dropped:
            text = "".join(parts)
            if code_chars <= MAX_CODE_SHARE * len(text.strip()):
                self.blocks.append(text)
        return tag

    def close(self) -> None:
        super().close()
        while self.stack:
            self._pop()


def clean(text: str) -> str | None:
    """Return the collapsed paragraph if it reads as English prose of the right length, else None."""
    text = " ".join(text.translate(TYPOGRAPHY).split())  # also drops Sphinx permalink marks
    words = text.split()
    prose = (
        MIN_CHARS <= len(text) <= MAX_CHARS
        and text.isascii()
        and text[0].isupper()
        and text[-1] in ".!?"  # a sentence, not a heading or a lead-in to a code example
        and not JUNK_RE.search(text)
        and not CODE_RE.search(text)
        and sum(c.isalpha() or c == " " for c in text) >= MIN_LETTER_SHARE * len(text)
        and len(words) >= MIN_WORDS
        and sum(bool(WORD_RE.fullmatch(w.strip(".,:;!?\"'()"))) for w in words) >= MIN_WORD_SHARE * len(words)
    )
    return text if prose else None


def run(cmd: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(cmd, check=False, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"make_distractors: {' '.join(cmd)} failed:\n{done.stderr.strip()}")
    return done.stdout


def fetch_package(package: str, pinned: str, cache: Path) -> tuple[Path, str]:
    """Download (unless cached) and unpack one package; return its unpacked root and version."""
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        # -o APT::Sandbox::User=root: the cache dir may not be readable by the _apt user.
        base = ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root"]
        done = subprocess.run([*base, f"{package}={pinned}"], check=False, cwd=debs, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"warning: {package}={pinned} not offered by apt; using the current candidate", file=sys.stderr)
            run([*base, package], cwd=debs)
        found = sorted(debs.glob(f"{package}_*.deb"))
        if not found:
            sys.exit(f"make_distractors: apt-get download {package} left no .deb in {debs}")
    versions = {run(["dpkg-deb", "-f", str(path), "Version"]).strip(): path for path in found}
    version = pinned if pinned in versions else max(versions, key=lambda v: versions[v].stat().st_mtime)
    deb = versions[version]
    if version != pinned:
        print(f"warning: {package} is {version}, not the pinned {pinned}: distractors will differ", file=sys.stderr)
    root = cache / "root" / f"{package}_{version}"
    marker = root / ".unpacked"
    if not marker.exists():
        root.mkdir(parents=True, exist_ok=True)
        run(["dpkg-deb", "-x", str(deb), str(root)])
        marker.touch()
    return root, version


def paragraphs(html_root: Path, skip_files: str) -> list[str]:
    skip = re.compile(skip_files)
    out: list[str] = []
    for path in sorted(html_root.rglob("*.html")):
        rel = path.relative_to(html_root)
        if skip.match(path.name) or SKIP_DIRS.intersection(rel.parts[:-1]):
            continue
        parser = BlockParser()
        parser.feed(path.read_text(encoding="utf-8", errors="replace"))
        parser.close()
        out.extend(p for p in map(clean, parser.blocks) if p)
    return out


def read_jsonl(path: Path) -> tuple[list[str], list[dict]]:
    """The non-blank lines of a JSONL file, each ending in a newline, and their parsed rows."""
    with path.open(encoding="utf-8") as f:
        lines = [line.rstrip("\n") + "\n" for line in f if line.strip()]
    return lines, [json.loads(line) for line in lines]


def build(set_dir: Path, out_dir: Path, count: int, cache: Path) -> None:
    corpus_lines, corpus = read_jsonl(set_dir / "corpus.jsonl")
    _, queries = read_jsonl(set_dir / "queries.jsonl")
    taken = {" ".join(row["text"].split()) for row in corpus}

    pool: dict[str, str] = {}  # sha256 -> text, deduplicated across packages
    overlap = 0  # paragraphs that are memories of the set itself
    for package, pinned, html_dir, skip_files in PACKAGES:
        root, version = fetch_package(package, pinned, cache)
        found = paragraphs(root / html_dir, skip_files)
        new = 0
        for text in found:
            if text in taken:
                overlap += 1
                continue
            key = hashlib.sha256(text.encode("utf-8")).hexdigest()
            if key not in pool:
                pool[key] = text
                new += 1
        print(f"{package} {version}: {len(found)} paragraphs kept, {new} new after dedup")
    print(f"pool: {len(pool)} distinct paragraphs ({overlap} found that are in the set's corpus, left out)")
    if len(pool) < count:
        sys.exit(f"make_distractors: only {len(pool)} paragraphs for --count {count}")

    ordered = [pool[key] for key in sorted(pool)][:count]
    distractors = [{"id": f"distractor-{n}", "text": text} for n, text in enumerate(ordered)]
    ids = {row["id"] for row in corpus}
    clash = ids.intersection(d["id"] for d in distractors)
    if clash:
        sys.exit(f"make_distractors: corpus already has ids {sorted(clash)[:3]}")

    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "corpus.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(corpus_lines)  # the set's own rows byte for byte
        f.writelines(json.dumps(row) + "\n" for row in distractors)
    shutil.copyfile(set_dir / "queries.jsonl", out_dir / "queries.jsonl")  # byte for byte
    print(f"wrote {out_dir}: {len(corpus)} + {len(distractors)} corpus rows, {len(queries)} queries")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("set_dir", type=Path, help="dev set directory with corpus.jsonl and queries.jsonl")
    ap.add_argument("out_dir", type=Path, help="where to write the set with distractors")
    ap.add_argument("--count", type=int, default=10000, help="number of distractor paragraphs (default 10000)")
    ap.add_argument("--cache", type=Path, help="directory to keep the downloaded and unpacked packages in")
    args = ap.parse_args()
    if args.count < 0:
        ap.error("--count must be >= 0")
    start = time.monotonic()
    if args.cache:
        build(args.set_dir, args.out_dir, args.count, args.cache)
    else:
        with tempfile.TemporaryDirectory(prefix="make_distractors-") as tmp:
            build(args.set_dir, args.out_dir, args.count, Path(tmp))
    print(f"done in {time.monotonic() - start:.1f}s")


if __name__ == "__main__":
    main()
