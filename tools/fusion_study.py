#!/usr/bin/env python3
"""Chooses hybrid fusion and the relevance floor on evidence, by cross-validation across dev sets.

Input: for each dev set, the candidate lists `voicerag eval SET --dump-lists FILE` writes (one JSON
line per query: id, relevant, vector [[id, cosine]...], bm25 [[id, score]...], each best first).

For every fusion family (reciprocal rank with depth, k and BM25 weight; convex combination with
min-max or z-score normalisation, vector weight and depth) it reports MRR@10 per set and a
leave-one-set-out score: the parameters are chosen on the other sets (best mean MRR@10) and scored
on the held-out one. The family to ship is the one with the best cross-validated score, never the
best figure on one set. Vector-only and BM25-only are reported beside them.

The floor: hits whose cosine is below a threshold are dropped. For each candidate threshold it
reports recall@10 on answerable queries and mean hits on no-answer queries (`"relevant": []`).

usage: fusion_study.py NAME=DUMP.jsonl [NAME=DUMP.jsonl ...] [--json OUT]
"""

import argparse
import itertools
import json
import statistics


def load(path):
    out = []
    with open(path) as f:
        for line in f:
            if line.strip():
                q = json.loads(line)
                # Each entry: [id, score, cosine]; older dumps have no cosine for BM25 entries.
                q["cos"] = {e[0]: float(e[2]) for e in q["vector"] + q["bm25"] if len(e) > 2 and e[2] is not None}
                q["vector"] = [(e[0], float(e[1])) for e in q["vector"]]
                q["bm25"] = [(e[0], float(e[1])) for e in q["bm25"]]
                out.append(q)
    return out


def rrf(q, depth, k, wb):
    scores = {}
    for side, w in (("vector", 1.0), ("bm25", wb)):
        for rank, (d, _) in enumerate(q[side][:depth], 1):
            scores[d] = scores.get(d, 0.0) + w / (k + rank)
    return sorted(scores, key=lambda d: -scores[d])


def normalise(values, how):
    xs = list(values.values())
    if not xs:
        return {}
    if how == "minmax":
        lo, hi = min(xs), max(xs)
        return {d: 1.0 if hi - lo <= 1e-9 else (x - lo) / (hi - lo) for d, x in values.items()}
    mean = statistics.fmean(xs)
    std = statistics.pstdev(xs)
    return {d: 0.0 if std <= 1e-9 else (x - mean) / std for d, x in values.items()}


def cosines(q):
    """Every candidate's cosine (as dumped), and a stand-in for one the dump lacks: the vector
    list's last cosine, an upper bound."""
    cos = dict(q["vector"])
    cos.update(q.get("cos", {}))
    last = q["vector"][-1][1] if q["vector"] else 0.0
    return cos, last


def convex(q, depth, w, how):
    cos, last = cosines(q)
    vec = dict(q["vector"][:depth])
    bm = dict(q["bm25"][:depth])
    cands = list(vec) + [d for d in bm if d not in vec]
    v = normalise({d: cos.get(d, last) for d in cands}, how)
    b = normalise(bm, how)
    bmin = min(min(b.values(), default=0.0), 0.0)
    score = {d: w * v[d] + (1 - w) * b.get(d, bmin) for d in cands}
    return sorted(cands, key=lambda d: -score[d])


def mrr(queries, ranker):
    total, n = 0.0, 0
    for q in queries:
        if not q["relevant"]:
            continue
        n += 1
        ranked = ranker(q)[:10]
        for i, d in enumerate(ranked):
            if d in q["relevant"]:
                total += 1.0 / (i + 1)
                break
    return total / max(n, 1)


FAMILIES = {
    "rrf": [
        (lambda p: (lambda q: rrf(q, *p)), p)
        for p in itertools.product([10, 20, 30, 50, 100], [10, 30, 60], [0.25, 0.5, 0.75, 1.0])
    ],
    "convex-minmax": [
        (lambda p: (lambda q: convex(q, p[0], p[1], "minmax")), p)
        for p in itertools.product([20, 30, 50, 100], [0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95])
    ],
    "convex-zscore": [
        (lambda p: (lambda q: convex(q, p[0], p[1], "zscore")), p)
        for p in itertools.product([20, 30, 50, 100], [0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95])
    ],
}


def study(sets):
    names = list(sets)
    report = {"single": {}, "families": {}}
    for name in names:
        report["single"][name] = {
            "vector": round(mrr(sets[name], lambda q: [d for d, _ in q["vector"]]), 4),
            "bm25": round(mrr(sets[name], lambda q: [d for d, _ in q["bm25"]]), 4),
        }
    for fam, grid in FAMILIES.items():
        table = []
        for make, params in grid:
            ranker = make(params)
            table.append((params, {n: mrr(sets[n], ranker) for n in names}))
        # Leave one set out: choose on the rest, score on it.
        cv = {}
        for held in names:
            rest = [n for n in names if n != held] or [held]
            params, scores = max(table, key=lambda t: statistics.fmean(t[1][n] for n in rest))
            cv[held] = {"params": params, "mrr@10": round(scores[held], 4)}
        best_params, best_scores = max(table, key=lambda t: statistics.fmean(t[1].values()))
        report["families"][fam] = {
            "cv": cv,
            "cv_mean": round(statistics.fmean(c["mrr@10"] for c in cv.values()), 4),
            "chosen_on_all": {"params": best_params, "mrr@10": {n: round(s, 4) for n, s in best_scores.items()}},
        }
    return report


def floor_table(sets, ranker, thresholds):
    rows = []
    for t in thresholds:
        row = {"floor": t}
        for name, queries in sets.items():
            hit, n, na_hits, na = 0, 0, 0, 0
            for q in queries:
                cos, last = cosines(q)
                kept = [d for d in ranker(q)[:10] if cos.get(d, last) >= t]
                if q["relevant"]:
                    n += 1
                    hit += any(d in q["relevant"] for d in kept)
                else:
                    na += 1
                    na_hits += len(kept)
            row[name] = {"recall@10": round(hit / max(n, 1), 4), "noanswer_hits": round(na_hits / max(na, 1), 2)}
        rows.append(row)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dumps", nargs="+", help="NAME=DUMP.jsonl")
    ap.add_argument("--json", help="write the whole report here")
    args = ap.parse_args()
    sets = {}
    for spec in args.dumps:
        name, _, path = spec.partition("=")
        sets[name] = load(path)
    report = study(sets)
    for name, s in report["single"].items():
        print(f"{name}: vector {s['vector']:.4f}  bm25 {s['bm25']:.4f}")
    for fam, r in report["families"].items():
        held = "  ".join(f"{n} {c['mrr@10']:.4f} {c['params']}" for n, c in r["cv"].items())
        print(f"{fam}: cv mean {r['cv_mean']:.4f} | {held}")
        print(f"    chosen on all sets: {r['chosen_on_all']}")
    thresholds = [round(0.05 * i, 2) for i in range(0, 10)]
    fam = max(report["families"], key=lambda f: report["families"][f]["cv_mean"])
    params = report["families"][fam]["chosen_on_all"]["params"]
    make = dict((tuple(p), m) for m, p in FAMILIES[fam])[tuple(params)]
    report["floor"] = {"family": fam, "params": params, "rows": floor_table(sets, make(params), thresholds)}
    print(f"floor ({fam} {params}):")
    for row in report["floor"]["rows"]:
        print("  ", json.dumps(row))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
