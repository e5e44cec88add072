#!/usr/bin/env python3
"""Build the retrieval dev sets in fixtures/eval/ from Debian documentation packages (issue 9).

Each set is a directory with `corpus.jsonl` (`{"id", "text"}` memories) and `queries.jsonl`
(`{"id", "text", "relevant": [doc ids]}`), the format of ../shared/eval/debfaq:

- pyfaq:     the Python FAQ of python3.11-doc; distractors are paragraphs of the rest of the Python docs.
- sqlitefaq: the SQLite FAQ of sqlite3-doc; distractors are paragraphs of the rest of the SQLite docs.
- debfaq:    ../shared/eval/debfaq copied as it is, plus no-answer queries.

Every set gains hand-written no-answer queries (another domain, `"relevant": []`). The packages are pinned
(PACKAGES below), fetched with `apt-get download` into a cache directory and read with the standard library
(ar + tar, html.parser): the output is the same byte for byte on every run.

    tools/make_devsets.py [--out fixtures/eval] [--debfaq ../shared/eval/debfaq] [--cache DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Pinned sources (Debian 12 "bookworm"). A newer version may change the FAQ text: --any-version builds
# from whatever apt offers, and the summary and README then say which version that was.
PACKAGES = {
    "pyfaq": ("python3.11-doc", "3.11.2-6+deb12u9"),
    "sqlitefaq": ("sqlite3-doc", "3.40.1-2+deb12u2"),
}
PY_DOC = "usr/share/doc/python3.11/html/"
SQLITE_DOC = "usr/share/doc/sqlite3/"
# The FAQ pages in the order of faq/index.html.
PY_FAQ_PAGES = ("general", "programming", "design", "library", "extending", "windows", "gui", "installed")
# Distractors: how many paragraphs each set draws from its package's other pages.
DISTRACTORS = {"pyfaq": 1500, "sqlitefaq": 1000}
ANSWER_MAX_CHARS = 1600  # like the longest debfaq memories; longer answers keep their first paragraphs
ANSWER_MIN_CHARS = 40
PARA_MIN_CHARS, PARA_MAX_CHARS, PARA_MIN_WORDS = 80, 1000, 12
BOILERPLATE = ("Changed in version", "New in version", "Deprecated since version", "Availability:")

# ---------------------------------------------------------------------------------------------- HTML

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
BLOCK = {
    "address", "article", "aside", "blockquote", "dd", "div", "dl", "dt", "figure", "footer", "form", "h1", "h2",
    "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table", "td", "th",
    "tr", "ul", "br", "caption", "figcaption", "tbody", "thead",
}  # fmt: skip
SKIP = {"script", "style", "pre", "nav", "head", "title", "svg", "math", "button", "form", "noscript"}
QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u00a0": " ", "\u00b6": ""})


@dataclass
class Node:
    tag: str
    attrs: dict[str, str] = field(default_factory=dict)
    children: list[Node | str] = field(default_factory=list)

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def elements(self):
        """This node's descendant elements in document order (not itself)."""
        for child in self.children:
            if isinstance(child, Node):
                yield child
                yield from child.elements()

    def find(self, tag: str, **attrs: str) -> Node | None:
        for node in self.elements():
            if node.tag == tag and all(node.attrs.get(k) == v for k, v in attrs.items()):
                return node
        return None


class TreeBuilder(HTMLParser):
    """A forgiving DOM builder: closes <p>, <li>, <dt>/<dd> implicitly and ignores stray end tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root")
        self.stack = [self.root]

    def _close(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def _open_tags(self) -> list[str]:
        return [n.tag for n in self.stack]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        open_tags = self._open_tags()
        if tag in BLOCK and "p" in open_tags:
            self._close("p")
        if tag == "li":
            # An open <li> of the innermost list ends where the next one starts.
            lists = [i for i, t in enumerate(open_tags) if t in ("ul", "ol")]
            if "li" in open_tags[lists[-1] if lists else 0 :]:
                self._close("li")
        if tag in ("dt", "dd"):
            for t in ("dt", "dd"):
                if self.stack[-1].tag == t:
                    self.stack.pop()
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        if tag not in VOID:
            self._close(tag)

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse_html(source: str) -> Node:
    builder = TreeBuilder()
    builder.feed(source)
    builder.close()
    return builder.root


def _skipped(node: Node) -> bool:
    cls = node.classes()
    return (
        node.tag in SKIP
        or "headerlink" in cls
        or any(c.startswith("highlight") for c in cls)
        or "nosearch" in cls
        or "menu" in cls
    )


def _collect(node: Node | str, out: list[str]) -> None:
    if isinstance(node, str):
        out.append(node)
        return
    if _skipped(node):
        return
    block = node.tag in BLOCK
    if block:
        out.append(" ")
    for child in node.children:
        _collect(child, out)
    if block:
        out.append(" ")


def clean(text: str) -> str:
    return re.sub(r"\s+", " ", text.translate(QUOTES)).strip()


def text_of(node: Node | str) -> str:
    """Visible text of a node, without code blocks, scripts or permalink marks, whitespace collapsed."""
    out: list[str] = []
    _collect(node, out)
    return clean("".join(out))


def paragraphs_of(container: Node, skip=lambda node: False) -> list[str]:
    """The text of each block-level child of `container` (loose text between blocks makes its own)."""
    paras: list[str] = []
    loose: list[str] = []

    def flush() -> None:
        text = clean("".join(loose))
        if text:
            paras.append(text)
        loose.clear()

    for child in container.children:
        if isinstance(child, Node) and (child.tag in BLOCK or _skipped(child)):
            flush()
            if not skip(child) and not _skipped(child):
                text = text_of(child)
                if text:
                    paras.append(text)
        else:
            _collect(child, loose)
    flush()
    return paras


def join_answer(paras: list[str], limit: int = ANSWER_MAX_CHARS) -> str:
    """Paragraphs joined up to `limit` characters: whole paragraphs while they fit, then as many whole sentences
    of the next one as fit. A paragraph that led into a dropped code block ends in a period instead of a colon,
    and bare lead-ins ("For example:") are left out; a trailing fragment without a sentence end is cut."""
    sentences: list[str] = []
    for para in paras:
        split = re.split(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])", para)
        if split[-1].endswith(":"):
            last = split.pop().rstrip(":").rstrip()
            if len(last) >= 25:
                split.append(last if last.endswith(".") else last + ".")
        sentences += split
    out = ""
    for sentence in sentences:
        joined = f"{out} {sentence}".strip()
        if len(joined) > limit:
            break
        out = joined
    if not out and sentences:
        out = sentences[0][:limit].rsplit(" ", 1)[0]
    if out and out[-1] not in ".!?\"')":
        cut = max(out.rfind(c) for c in ".!?")
        if cut + 1 >= ANSWER_MIN_CHARS:
            out = out[: cut + 1]
    return out


# Answers that only point elsewhere (a list of links, "see question X"), judged by reading them.
POINTERS = {
    "How do I access the serial (RS232) port?",
    "What module should I use to help with generating HTML?",
    "How do I make an executable from a Python script?",
    "Are there any known size limits to SQLite databases?",
}


def only_a_link(question: str, answer: str) -> bool:
    if question in POINTERS:
        return True
    rest = clean(re.sub(r"https?://\S+", " ", answer))
    return len(rest) < ANSWER_MIN_CHARS or (rest.startswith("See ") and len(rest) < 100)


# -------------------------------------------------------------------------------------------- packages


def fetch_deb(package: str, version: str | None, cache: Path) -> tuple[Path, str]:
    """The .deb of `package` at `version` (or apt's candidate when None) from the cache or `apt-get download`.
    Returns the file and the version it holds."""
    cache.mkdir(parents=True, exist_ok=True)
    if version is not None:
        path = cache / f"{package}_{version.replace(':', '%3a')}_all.deb"
        if path.exists():
            return path, version
    spec = package if version is None else f"{package}={version}"
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        Path(tmp).chmod(0o777)  # apt drops to the _apt user when it can
        proc = subprocess.run(["apt-get", "download", spec], check=False, cwd=tmp, capture_output=True, text=True)
        debs = sorted(Path(tmp).glob(f"{package}_*.deb"))
        if proc.returncode != 0 or len(debs) != 1:
            hint = "run `apt-get update` first" if version is None else "or pass --any-version to use apt's candidate"
            raise SystemExit(f"apt-get download {spec} failed ({hint}):\n{proc.stderr.strip()}")
        got = debs[0].name.split("_")[1].replace("%3a", ":")
        target = cache / debs[0].name
        shutil.move(str(debs[0]), target)
    return target, got


def deb_files(deb: Path, prefix: str, suffix: str = ".html") -> dict[str, str]:
    """Text of the files under `prefix` ending in `suffix` in a .deb's data archive (ar + tar, stdlib only)."""
    blob = deb.read_bytes()
    if not blob.startswith(b"!<arch>\n"):
        raise SystemExit(f"{deb}: not a .deb (ar) archive")
    pos, data = 8, None
    while pos + 60 <= len(blob):
        name = blob[pos : pos + 16].decode().strip().rstrip("/")
        size = int(blob[pos + 48 : pos + 58].decode().strip())
        if name.startswith("data.tar"):
            data = blob[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size & 1)
    if data is None:
        raise SystemExit(f"{deb}: no data.tar member")
    files: dict[str, str] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        for member in tar.getmembers():
            name = member.name.removeprefix("./")
            if member.isfile() and name.startswith(prefix) and name.endswith(suffix):
                raw = tar.extractfile(member).read()
                files[name.removeprefix(prefix)] = raw.decode("utf-8", errors="replace")
    return files


# -------------------------------------------------------------------------------------------- the FAQs


def python_faq(pages: dict[str, str], order: tuple[str, ...] = PY_FAQ_PAGES) -> list[tuple[str, str]]:
    """(question, answer) of every leaf section of the Python FAQ pages: the heading is the question, the
    section's paragraphs (code blocks left out) the answer."""
    pairs = []
    for page in order:
        main = parse_html(pages[f"faq/{page}.html"]).find("div", role="main")
        for section in main.elements():
            if section.tag != "section" or any(n.tag == "section" for n in section.elements()):
                continue
            heading = next(c for c in section.children if isinstance(c, Node) and re.fullmatch(r"h[1-6]", c.tag))
            paras = paragraphs_of(section, skip=lambda n, h=heading: n is h)
            pairs.append((text_of(heading), join_answer(paras)))
    return pairs


def sqlite_faq(page: str) -> list[tuple[str, str]]:
    """(question, answer) of faq.html: `<p><b>(N) question</b></p>` followed by a `<blockquote>` answer."""
    pairs = []
    nodes = [n for n in parse_html(page).elements()]
    for i, node in enumerate(nodes):
        if node.tag != "p":
            continue
        match = re.fullmatch(r"\((\d+)\) (.+)", text_of(node))
        if not match or node.find("b") is None:
            continue
        answer = next(n for n in nodes[i + 1 :] if n.tag == "blockquote")
        pairs.append((match.group(2), join_answer(paragraphs_of(answer))))
    return pairs


def distractor_paragraphs(pages: dict[str, str], keep, main_of) -> list[tuple[str, str]]:
    """(page, text) of every plausible memory-sized <p> of the pages `keep` accepts, in page order."""
    out = []
    for name in sorted(pages):
        if not keep(name):
            continue
        main = main_of(parse_html(pages[name]))
        if main is None:
            continue
        for node in main.elements():
            if node.tag != "p":
                continue
            text = text_of(node)
            if (
                PARA_MIN_CHARS <= len(text) <= PARA_MAX_CHARS
                and len(text.split()) >= PARA_MIN_WORDS
                and text[-1] in ".!?"
                and not text.endswith("...")
                and not text.startswith(BOILERPLATE)
                and sum(c.isalpha() for c in text) > 0.6 * len(text)
            ):
                out.append((name, text))
    return out


def key(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def pick_distractors(candidates: list[tuple[str, str]], answers: list[str], count: int) -> list[str]:
    """`count` distinct paragraphs that are not part of an FAQ answer, chosen by a hash of their text (spread
    over all pages, the same every run), returned in page order."""
    answer_keys = [key(a) for a in answers]
    seen: dict[str, int] = {}
    for i, (_, text) in enumerate(candidates):
        k = key(text)
        if k not in seen and not any(k in a or a in k for a in answer_keys):
            seen[k] = i
    ranked = sorted(seen.items(), key=lambda kv: hashlib.sha256(kv[0].encode()).hexdigest())
    return [candidates[i][1] for i in sorted(i for _, i in ranked[:count])]


def usable(pairs: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[str]]:
    """Pairs whose answer says something (not only a link, at least ANSWER_MIN_CHARS), and the dropped questions;
    a repeated question keeps its first answer."""
    kept, dropped, seen = [], [], set()
    for q, a in pairs:
        if len(a) < ANSWER_MIN_CHARS or only_a_link(q, a) or q.lower() in seen:
            dropped.append(q)
        else:
            kept.append((q, a))
            seen.add(q.lower())
    return kept, dropped


# ------------------------------------------------------------------------------------ no-answer queries

# Written by hand: questions a voice assistant hears that no memory of the set answers. Some share words with
# the set's domain (install, package, version, file, table, list, ...) so that word overlap alone misleads.
NOANSWER = {
    "debfaq": [
        "What time is my dentist appointment on Thursday?",
        "Remind me what my brother-in-law is called.",
        "How long should I boil an egg for a runny yolk?",
        "When does the package from the bookshop arrive?",
        "Who won the football match last night?",
        "How do I install the new car seat for the baby?",
        "What's a good stretching routine before running?",
        "Can you read me my shopping list?",
        "What's the weather going to be like in Lisbon this weekend?",
        "How many grams of flour go into a loaf of sourdough?",
        "Which gate does my flight to Madrid leave from?",
        "What was the name of the restaurant we liked in Rome?",
        "How do I get red wine out of a white shirt?",
        "Is it worth upgrading my phone contract this year?",
        "When is my mother's birthday?",
        "How do I release a stuck zipper on my jacket?",
        "What should I pack for a week of hiking in the Alps?",
        "How much should I tip a taxi driver in New York?",
        "What's the score in the tennis final?",
        "Set a timer for twelve minutes for the pasta.",
        "Where did I park the car at the airport?",
        "How do I repair a puncture on my bike tyre?",
        "What's the best way to store fresh basil?",
        "Did I already pay the electricity bill this month?",
        "How far is it to walk from the station to the museum?",
        "What did the doctor say about my knee last time?",
        "How do I keep my sourdough starter alive while I'm on holiday?",
        "Which train do I take to get to my aunt's house?",
        "What's my gym membership number?",
        "How many calories are in a banana?",
        "How do I fold a fitted sheet?",
        "What's the difference between baking soda and baking powder?",
        "When does the swimming pool open on Sundays?",
        "Which free museums are there in London?",
        "What's the name of my daughter's piano teacher?",
        "How do I get my toddler to sleep through the night?",
        "What's the stable temperature for keeping a wine cellar?",
        "Can you recommend a mystery novel for the beach?",
        "How do I descale the kettle?",
        "What was the mirror I ordered for the hallway, and when does it come?",
    ],
    "pyfaq": [
        "How long does a ball python live as a pet?",
        "When is my eye test booked for?",
        "Remind me what my sister's name is.",
        "How do I import my contacts from my old phone?",
        "Can you add eggs and milk to my shopping list?",
        "What's a good recipe for a quick weeknight curry?",
        "How do I copy my boarding pass onto my phone?",
        "Which string tension should I use for my tennis racket?",
        "What's the best way to get to the airport from downtown?",
        "Is the Monty Python museum exhibit still open this month?",
        "How many cups of rice should I cook for six people?",
        "Who won the cycling stage today?",
        "What should I pack for a weekend in Barcelona?",
        "When is the next full moon?",
        "How do I sort my laundry so the colours don't run?",
        "What did my boss say about the meeting on Friday?",
        "How do I book a table for four at the Italian place tonight?",
        "What's a good exercise for lower back pain?",
        "How long should I let a steak rest after grilling?",
        "Can you read my last text message from Mum?",
        "Where did I put the spare house key?",
        "What's the dress code for my cousin's wedding?",
        "How do I fix a dripping kitchen tap?",
        "Which vaccinations do I need for a trip to Kenya?",
        "What's the exchange rate between euros and dollars right now?",
        "How do I train my dog to stop pulling on the lead?",
        "What's the name of that podcast my friend recommended?",
        "How many steps did I walk yesterday?",
        "When is the recycling collected on my street?",
        "What's the best time of year to visit Japan?",
        "Set an alarm for half past six.",
        "How do I keep cut flowers fresh for longer?",
        "What's the plot of the film we watched last weekend?",
        "Is it going to rain during the marathon on Sunday?",
        "How do I change the batteries in the smoke alarm?",
        "What's the address of my doctor's surgery?",
        "How should I store homemade soup in the freezer?",
        "What's the difference between a latte and a flat white?",
        "Which version of the lasagne recipe did grandma use?",
        "How do I get chewing gum out of my child's hair?",
    ],
    "sqlitefaq": [
        "Book a table for two at the sushi place at eight.",
        "What's my car insurance policy number?",
        "When does my passport expire?",
        "How do I lock the front door from the app?",
        "Delete the reminder about the car wash.",
        "Which index fund did I put my savings into?",
        "What's the name of my son's football coach?",
        "How do I make a fluffy omelette?",
        "What's the quickest way to the beach from the hotel?",
        "Who is playing in the basketball game tonight?",
        "How many miles did I run last week?",
        "Remind me what my niece wants for her birthday.",
        "What time does the pharmacy close today?",
        "How do I get rid of fruit flies in the kitchen?",
        "What's the baggage allowance on my flight to Dublin?",
        "Can you play some relaxing jazz?",
        "What did I write in my journal yesterday?",
        "How do I unlock the bathroom door if a child locked it?",
        "What's a good vegetarian lasagne recipe?",
        "How long do I roast a chicken for?",
        "When is my next haircut?",
        "What's the phone number of the plumber we used last time?",
        "How do I rearrange the furniture so the living room looks bigger?",
        "Which hotel did we stay at in Vienna?",
        "How do I remove a splinter safely?",
        "What's the league table looking like for my team?",
        "How many tablespoons are in a cup?",
        "What's on my calendar for Monday morning?",
        "Is the farmers' market open this Saturday?",
        "How do I backup the photos from my camera to my laptop?",
        "What's a good gift for a colleague who is retiring?",
        "How do I teach my kid to ride a bike?",
        "When is the next bus to the city centre?",
        "What's the recommended dose of ibuprofen for an adult?",
        "How do I join the book club my neighbour mentioned?",
        "Which wine goes well with salmon?",
        "What's the Wi-Fi password at my parents' house?",
        "How do I transfer money to my brother?",
        "What's the code for the garage door?",
        "How long is the warranty on my washing machine?",
    ],
}

# ---------------------------------------------------------------------------------------------- output


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def noanswer_rows(name: str) -> list[dict]:
    return [{"id": f"{name}-na{i}", "text": q, "relevant": []} for i, q in enumerate(NOANSWER[name])]


def write_set(out: Path, name: str, pairs: list[tuple[str, str]], distractors: list[str]) -> dict:
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    corpus = [{"id": f"{name}-a{i}", "text": a} for i, (_, a) in enumerate(pairs)]
    corpus += [{"id": f"{name}-d{i}", "text": t} for i, t in enumerate(distractors)]
    queries = [{"id": f"{name}-q{i}", "text": q, "relevant": [f"{name}-a{i}"]} for i, (q, _) in enumerate(pairs)]
    write_jsonl(d / "corpus.jsonl", corpus)
    write_jsonl(d / "queries.jsonl", queries + noanswer_rows(name))
    return {
        "memories": len(corpus),
        "queries": len(queries),
        "noanswer": len(NOANSWER[name]),
        "distractors": len(distractors),
    }


def build_pyfaq(deb: Path, out: Path) -> tuple[dict, list[str]]:
    pages = deb_files(deb, PY_DOC)
    pairs, dropped = usable(python_faq(pages))
    skip_dirs = ("faq/", "whatsnew/", "c-api/", "_static/", "_sources/")
    skip_pages = {"about.html", "bugs.html", "copyright.html", "license.html", "genindex.html", "search.html"}

    def keep(name: str) -> bool:
        return not name.startswith(skip_dirs) and name not in skip_pages and not name.startswith("genindex")

    candidates = distractor_paragraphs(pages, keep, lambda root: root.find("div", role="main"))
    distractors = pick_distractors(candidates, [a for _, a in pairs], DISTRACTORS["pyfaq"])
    return write_set(out, "pyfaq", pairs, distractors), dropped


def build_sqlitefaq(deb: Path, out: Path) -> tuple[dict, list[str]]:
    pages = deb_files(deb, SQLITE_DOC)
    pairs, dropped = usable(sqlite_faq(pages["faq.html"]))
    skip_pages = {"faq.html", "changes.html", "chronology.html", "news.html", "docs.html", "sitemap.html"}

    def keep(name: str) -> bool:
        return not name.startswith(("releaselog/", "syntax/", "search.d/")) and name not in skip_pages

    candidates = distractor_paragraphs(pages, keep, lambda root: root.find("body"))
    distractors = pick_distractors(candidates, [a for _, a in pairs], DISTRACTORS["sqlitefaq"])
    return write_set(out, "sqlitefaq", pairs, distractors), dropped


def build_debfaq(src: Path, out: Path) -> dict:
    d = out / "debfaq"
    d.mkdir(parents=True, exist_ok=True)
    corpus = (src / "corpus.jsonl").read_text()
    queries = (src / "queries.jsonl").read_text()
    if queries and not queries.endswith("\n"):
        queries += "\n"
    (d / "corpus.jsonl").write_text(corpus)
    (d / "queries.jsonl").write_text(queries + "".join(json.dumps(r) + "\n" for r in noanswer_rows("debfaq")))
    return {
        "memories": corpus.count("\n"),
        "queries": queries.count("\n"),
        "noanswer": len(NOANSWER["debfaq"]),
        "distractors": 0,
    }


README = """\
# Retrieval dev sets

Each directory is one set in the format of `../shared/eval/debfaq`: `corpus.jsonl` lines `{{"id", "text"}}` (the
memories) and `queries.jsonl` lines `{{"id", "text", "relevant": [doc ids]}}`. A query with `"relevant": []` is a
no-answer query: a question from another domain (cooking, travel, sport, personal-assistant requests), written
by hand, some sharing words with the set's domain, that no memory answers; none should get hits above the
relevance floor. FAQ questions are the queries and each one's own answer is its relevant memory; distractors
are other paragraphs of the same package's documentation (HTML cleaned, code blocks left out, deduplicated,
{pmin}-{pmax} characters, chosen by a hash of their text). Answers longer than {amax} characters keep their
first paragraphs; answers under {amin} characters or that are only a link are dropped.

All of it is generated, the same byte for byte on every run; do not edit by hand. Rebuild (root or apt
rights needed for `apt-get download`; the .debs are cached in `$TMPDIR/voicerag-devsets`):

    tools/make_devsets.py --out fixtures/eval --debfaq ../shared/eval/debfaq

The package versions are pinned in the script (`PACKAGES`). If Debian no longer serves a pinned version,
`--any-version` builds from apt's candidate; the README then records that version, and the diff shows what
changed.

Known limits: code blocks are left out of answers, so a few answers keep a sentence that introduced one
("With this table, the statement is logically equivalent to saying."); distractors are not checked by hand
and a few touch an FAQ topic (unlabelled near-answers); sqlitefaq has only 26 answerable queries, so its
figures move in steps of about 0.04.

{sections}"""

SECTION = """\
## {name}

{what}
- source: {source}
- memories: {memories} ({answers} answers + {distractors} distractors)
- queries: {total} ({queries} answerable + {noanswer} no-answer)

"""


def write_readme(out: Path, stats: dict[str, dict], sources: dict[str, str]) -> None:
    what = {
        "debfaq": "The Debian FAQ set of `../shared/eval/debfaq`, copied as it is, plus `debfaq-na*`\n"
        "no-answer queries.",
        "pyfaq": "The Python FAQ (`faq/*.html`: general, programming, design, library, extending, windows, gui,\n"
        "installed); distractors from the tutorial, HOWTOs, library and language references.",
        "sqlitefaq": "The SQLite FAQ (`faq.html`); distractors from the rest of the SQLite documentation (not the\n"
        "release logs).",
    }
    sections = "".join(
        SECTION.format(
            name=name,
            what=what[name],
            source=sources[name],
            answers=s["memories"] - s["distractors"],
            total=s["queries"] + s["noanswer"],
            **s,
        )
        for name, s in stats.items()
    )
    text = README.format(
        pmin=PARA_MIN_CHARS, pmax=PARA_MAX_CHARS, amax=ANSWER_MAX_CHARS, amin=ANSWER_MIN_CHARS, sections=sections
    )
    (out / "README.md").write_text(text.rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "fixtures" / "eval")
    ap.add_argument("--debfaq", type=Path, default=ROOT.parent / "shared" / "eval" / "debfaq")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "voicerag-devsets")
    ap.add_argument("--any-version", action="store_true", help="use apt's candidate if the pinned version is gone")
    args = ap.parse_args(argv)

    stats: dict[str, dict] = {}
    sources = {"debfaq": f"`{args.debfaq.name}` of the shared eval data (path given by --debfaq)"}
    stats["debfaq"] = build_debfaq(args.debfaq, args.out)
    for name, build in (("pyfaq", build_pyfaq), ("sqlitefaq", build_sqlitefaq)):
        package, version = PACKAGES[name]
        try:
            deb, got = fetch_deb(package, version, args.cache)
        except SystemExit:
            if not args.any_version:
                raise
            deb, got = fetch_deb(package, None, args.cache)
        digest = hashlib.sha256(deb.read_bytes()).hexdigest()
        sources[name] = f"Debian package `{package}` version `{got}`, .deb sha256 `{digest}`"
        stats[name], dropped = build(deb, args.out)
        for q in dropped:
            print(f"{name}: dropped (answer too short, only a link, or repeated): {q}", file=sys.stderr)
    write_readme(args.out, stats, sources)
    print(f"{'set':<10} {'memories':>8} {'distract':>8} {'queries':>8} {'no-answer':>9}  source")
    for name, s in stats.items():
        print(
            f"{name:<10} {s['memories']:>8} {s['distractors']:>8} {s['queries']:>8} {s['noanswer']:>9}  {sources[name]}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
