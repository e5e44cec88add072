"""Where the Python layer's overhead goes: `await pipeline.query(...)` against the same query
awaited in Rust (`_bench_rust("query", stages=True)`), per call, back to back and paced like an agent
(a pause between calls, so the runtime's threads park between calls in both).

    maturin develop --release -m python/Cargo.toml --features latency-trace
    .venv/bin/python python/bench/overhead_trace.py [--n 400] [--memories 10000] [--pauses 0,10]

Per Python call (timestamps of the `latency-trace` feature, on the clock of time.monotonic_ns):
  call->spawn      Python's call until the bridge's spawn() runs (argument parsing, request built)
  spawn->task      spawn() until the tokio task runs (the hand-over into the runtime)
  latency - work   per call, the time outside the pipeline's own total (robust to the work's noise)
  task: outside    the task's time outside the pipeline's own timing (validation, permit, the
                   request's task and its join): work done - task started - timings.total
  work (total)     the pipeline's own total (received -> finished), as in the Rust baseline
  done->loop       work done until the loop's reader callback runs (the hand-over back)
  resolve          converting the result (convert) and completing the asyncio future (set_result)
  resolved->await  the future's done-callback until the awaiting coroutine resumes
`query` is polled by the loop's thread (bridge::spawn_on_loop), not by a tokio task: its "task"
starts with the first poll inside the call (spawn->task ~0, so the hand-over into the runtime falls
in task: outside), and "work done" is the last wake-up of its future (done->loop, the hand-over back).
Per Rust call: latency, the pipeline's total, and latency - total (the same task-outside part).
In alternating blocks, so load drift hits both alike. Timings vary with load: see latency.py.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import defaultdict

import voicerag
from voicerag import _native

TOPICS = ["dog", "sister", "train", "doctor", "garden", "birthday", "coffee", "laptop", "holiday", "piano"]
QUERIES = [f"what did I say about my {t}?" for t in TOPICS]


def pct(values: list[float], p: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))] if v else float("nan")


async def python_block(pipeline, k: int, pause_s: float, rows: dict) -> None:
    _native._trace(True)
    spans, totals = [], []
    for i in range(k):
        if pause_s:
            await asyncio.sleep(pause_s)
        t0 = time.monotonic_ns()
        r = await pipeline.query(QUERIES[i % len(QUERIES)], namespace="bench")
        t1 = time.monotonic_ns()
        spans.append((t0, t1))
        totals.append((r.timings.total_ms, r.timings.embed_ms, r.timings.search_ms))
    events = _native._trace(False)
    calls: dict[int, dict[str, int]] = defaultdict(dict)
    for cid, point, t in events:
        calls[cid][point] = t
    for (t0, t1), (total, embed, search), cid in zip(spans, totals, sorted(calls)[-k:]):
        c = calls[cid]
        us = lambda a, b: (b - a) / 1000  # noqa: E731
        rows["latency"].append(us(t0, t1))
        rows["latency - work"].append(us(t0, t1) - total * 1000)
        rows["call->spawn"].append(us(t0, c["py: spawn entered"]))
        rows["spawn->task"].append(us(c["py: spawn entered"], c["tokio: task started"]))
        rows["task: outside"].append(us(c["tokio: task started"], c["tokio: work done"]) - total * 1000)
        rows["work (total)"].append(total * 1000)
        rows["embed"].append(embed * 1000)
        rows["search"].append(search * 1000)
        rows["done->loop"].append(us(c["tokio: work done"], c["loop: resolving"]))
        rows["resolve"].append(us(c["loop: resolving"], c["loop: resolved"]))
        rows["  convert"].append(us(c["loop: resolving"], c["loop: converted"]))
        rows["  set_result"].append(us(c["loop: converted"], c["loop: resolved"]))
        rows["resolved->await"].append(us(c["loop: resolved"], t1))


async def bridge_block(k: int, pause_s: float, rows: dict) -> None:
    """The bridge alone (a future tokio completes at once): its two hand-overs, paced or not."""
    _native._trace(True)
    spans = []
    for _ in range(k):
        if pause_s:
            await asyncio.sleep(pause_s)
        t0 = time.monotonic_ns()
        await _native._bench_roundtrip()
        spans.append((t0, time.monotonic_ns()))
    events = _native._trace(False)
    calls: dict[int, dict[str, int]] = defaultdict(dict)
    for cid, point, t in events:
        calls[cid][point] = t
    for (t0, t1), cid in zip(spans, sorted(calls)[-k:]):
        c = calls[cid]
        rows["bridge"].append((t1 - t0) / 1000)
        rows["bridge spawn->task"].append((c["tokio: task started"] - c["py: spawn entered"]) / 1000)
        rows["bridge done->loop"].append((c["loop: resolving"] - c["tokio: work done"]) / 1000)
        rows["bridge resolve"].append((c["loop: resolved"] - c["loop: resolving"]) / 1000)


async def rust_block(pipeline, k: int, pause_ms: float, rows: dict) -> None:
    for latency, embed, search, _rerank, total in await pipeline._bench_rust(
            "query", QUERIES, "bench", "", k, pause_ms=pause_ms, stages=True):
        rows["latency"].append(latency)
        rows["latency - work"].append(latency - total * 1000)
        rows["work (total)"].append(total * 1000)
        rows["embed"].append(embed * 1000)
        rows["search"].append(search * 1000)
        rows["task: outside"].append(latency - total * 1000)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memories", type=int, default=10000)
    parser.add_argument("--n", type=int, default=400, help="calls of each kind per pause")
    parser.add_argument("--block", type=int, default=25)
    parser.add_argument("--pauses", default="0,10", help="pauses between calls, ms, comma-separated")
    args = parser.parse_args()
    if not hasattr(_native, "_trace"):
        print("needs a build with --features latency-trace", file=sys.stderr)
        return 2
    pauses = [float(p) for p in args.pauses.split(",")]
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        pipeline = await voicerag.Pipeline.start(store__data_dir=tmp)
        try:
            await asyncio.gather(*(
                pipeline.remember(f"note {i}: something about my {TOPICS[i % len(TOPICS)]} number {i}",
                                  namespace="bench", id=f"m{i}", conversation=f"c{i % 50}")
                for i in range(args.memories)))
            for q in QUERIES * 3:
                await pipeline.query(q, namespace="bench")
            await pipeline._bench_rust("query", QUERIES, "bench", "", 30)
            rows = {(who, p): defaultdict(list) for who in ("rust", "python") for p in pauses}
            done = 0
            while done < args.n:
                k = min(args.block, args.n - done)
                for p in pauses:
                    await rust_block(pipeline, k, p, rows[("rust", p)])
                    await python_block(pipeline, k, p / 1000, rows[("python", p)])
                    await bridge_block(k, p / 1000, rows[("python", p)])
                done += k
            print(f"query, {args.memories} memories, n={args.n} per row; p50 (p90) in us")
            for p in pauses:
                r, py = rows[("rust", p)], rows[("python", p)]
                print(f"-- pause {p:g} ms between calls")
                for name in ("latency", "work (total)", "latency - work", "embed", "search", "task: outside"):
                    print(f"  {name:<16} rust {pct(r[name], 50):8.1f} ({pct(r[name], 90):8.1f})"
                          f"   python {pct(py[name], 50):8.1f} ({pct(py[name], 90):8.1f})")
                for name in ("call->spawn", "spawn->task", "done->loop", "resolve", "  convert",
                             "  set_result", "resolved->await", "bridge", "bridge spawn->task",
                             "bridge done->loop", "bridge resolve"):
                    print(f"  {name:<16} {'':>22}   python {pct(py[name], 50):8.1f} ({pct(py[name], 90):8.1f})")
                print(f"  overhead p50 (python - rust latency): {pct(py['latency'], 50) - pct(r['latency'], 50):+.1f} us;"
                      f" outside the pipeline's work, per call: "
                      f"{pct(py['latency - work'], 50) - pct(r['latency - work'], 50):+.1f} us")
            return 0
        finally:
            await pipeline.shutdown()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
