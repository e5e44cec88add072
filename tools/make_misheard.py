#!/usr/bin/env python3
"""Builds the "misheard names" variants of the dev sets: each set's queries with their names
spelt the way a speech recogniser might write them when it hears the sound but not the spelling
("Python" -> "Pithon", "Debian" -> "Debbian").

usage: tools/make_misheard.py [--eval fixtures/eval] [SET ...]   (default: debfaq pyfaq sqlitefaq)

For each SET it writes fixtures/eval/SET-misheard/: `queries.jsonl` (the set's queries, same ids
and labels, names respelt), `corpus.jsonl` (a relative symlink to the set's own corpus, so the
memories are the same byte for byte) and `README.md` (what changed, with counts); and
fixtures/eval/SET-named/, the same queries as the misheard set but spelt right (their clean twin:
the difference between the two is what the misspelt names cost).

What is a name: a word of at least 4 letters, not all capitals (acronyms are spelt out by a
recogniser, not respelt), that the set's corpus writes capitalised in mid-sentence at least twice
and more often than in lower case (Python, Debian, SQLite, Windows, Tkinter; not "What", not
"dpkg", whose lower-case program names are left alone). Every occurrence of a name in a query is
respelt; answerable queries without one are left out (they would be their clean selves), no-answer
queries are all kept (respelt where they name something), to see that sound-alikes pull in no hits.

How a name is respelt: one spelling change that keeps the sound (ph/f, th/t, ck/k, c/k, x/ks, y/i,
a double consonant single or a single one doubled, an unstressed vowel changed), the rule chosen
by a SHA-256 of the query id and the word, so the output is the same byte for byte on every run.
These are spelling variants of the same sound; acoustic confusions of different sounds (Tiago
heard as Diego) are not in this set.
"""
import argparse
import hashlib
import json
import os
import re
import sys
from collections import Counter
from pathlib import Path

WORD = re.compile(r"[A-Za-z]+")

# (pattern, replacement) on the lower-cased word; only the first match is changed. None of them
# touches the first letter, so a name keeps its initial sound.
RULES = [
    (r"(?<=.)ph", "f"),
    (r"(?<=.)f", "ph"),
    (r"(?<=.)th", "t"),
    (r"(?<=.)ck", "k"),
    (r"(?<=.)c(?=[aou])", "k"),
    (r"(?<=.)k", "c"),
    (r"(?<=.)x", "ks"),
    (r"(?<=.)y", "i"),
    (r"(?<=.)i(?=[^aeiou]|$)", "y"),
    (r"(?<=.)([bdfglmnprstz])\1", r"\1"),
    (r"(?<=[aeiou])([bdglmnprt])(?=[aeiou])", r"\1\1"),
    (r"(?<=.)on$", "en"),
    (r"(?<=.)an$", "en"),
    (r"(?<=.)er$", "ur"),
    (r"(?<=.)or$", "er"),
    (r"(?<=.)ow", "ou"),
    (r"(?<=.)ee", "ea"),
    (r"(?<=.)oo", "u"),
]


def names_of(corpus_texts):
    """Words the corpus writes capitalised in mid-sentence more often than in lower case."""
    capital, lower = Counter(), Counter()
    for text in corpus_texts:
        prev_end = None
        for m in WORD.finditer(text):
            w = m.group(0)
            before = text[prev_end:m.start()] if prev_end is not None else "."
            prev_end = m.end()
            sentence_start = bool(re.search(r"[.!?:]\s*$", before)) or before.strip() == "" and m.start() == 0
            key = w.lower()
            if len(w) > 1 and w.isupper():
                # Acronyms and SQL keywords (DELETE) say nothing about a word being a name.
                continue
            if w[0].isupper() and not sentence_start:
                capital[key] += 1
            elif w.islower():
                lower[key] += 1
    return {
        w for w, n in capital.items()
        if n >= 2 and n > lower[w] and len(w) >= 4
    }


def respell(word, salt):
    """One sound-keeping spelling change of `word` (case kept for the first letter)."""
    low = word.lower()
    start = int.from_bytes(hashlib.sha256(f"{salt}:{low}".encode()).digest()[:4], "big") % len(RULES)
    for i in range(len(RULES)):
        pattern, repl = RULES[(start + i) % len(RULES)]
        new = re.sub(pattern, repl, low, count=1)
        if new != low:
            return (new[0].upper() + new[1:]) if word[0].isupper() else new
    return word


def build(eval_dir: Path, name: str):
    src = eval_dir / name
    out = eval_dir / f"{name}-misheard"
    corpus = [json.loads(l) for l in (src / "corpus.jsonl").read_text().splitlines() if l.strip()]
    names = names_of(c["text"] for c in corpus)
    lines, named, changed, respelt = [], [], 0, Counter()
    for line in (src / "queries.jsonl").read_text().splitlines():
        if not line.strip():
            continue
        q = json.loads(line)

        def swap(m):
            w = m.group(0)
            if w.lower() in names and not w.isupper():
                new = respell(w, q["id"])
                if new != w:
                    respelt[f"{w} -> {new}"] += 1
                return new
            return w

        text = WORD.sub(swap, q["text"])
        if text != q["text"]:
            changed += 1
        elif q["relevant"]:
            # An answerable query without a name measures nothing here: its clean twin is it.
            continue
        named.append(json.dumps(q, ensure_ascii=False))
        q["text"] = text
        lines.append(json.dumps(q, ensure_ascii=False))
    twin = eval_dir / f"{name}-named"
    for d, qs in [(out, lines), (twin, named)]:
        d.mkdir(parents=True, exist_ok=True)
        (d / "queries.jsonl").write_text("\n".join(qs) + "\n")
        link = d / "corpus.jsonl"
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(f"../{name}/corpus.jsonl", link)
    (twin / "README.md").write_text(
        f"# {name}-named\n\nGenerated by `tools/make_misheard.py`: the queries of `{name}-misheard` spelt as in "
        f"`{name}` (its clean twin), on the same memories. Do not edit by hand.\n"
    )
    answerable = sum(1 for l in lines if json.loads(l)["relevant"])
    examples = "\n".join(f"- {k} ({n})" for k, n in sorted(respelt.items(), key=lambda x: (-x[1], x[0]))[:15])
    (out / "README.md").write_text(
        f"# {name}-misheard\n\n"
        f"Generated by `tools/make_misheard.py` from `{name}`: the same memories (`corpus.jsonl` links to\n"
        f"`../{name}/corpus.jsonl`) and the same queries and labels, with every name in a query respelt the way\n"
        f"a recogniser might write it (see the script for what is a name and how it is respelt). Do not edit by hand.\n\n"
        f"- queries: {len(lines)}: {answerable} answerable (those of `{name}` with a name), "
        f"{len(lines) - answerable} no-answer; {changed} with a name respelt\n"
        f"- names found in the corpus: {len(names)}; distinct respellings used: {len(respelt)}\n\n"
        f"Most frequent respellings:\n{examples}\n"
    )
    return len(lines), changed, answerable


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval", default="fixtures/eval", type=Path)
    ap.add_argument("sets", nargs="*", default=["debfaq", "pyfaq", "sqlitefaq"])
    args = ap.parse_args()
    for name in args.sets:
        total, changed, answerable = build(args.eval, name)
        print(f"{name}-misheard: {total} queries ({answerable} answerable), {changed} with a name respelt", file=sys.stderr)


if __name__ == "__main__":
    main()
