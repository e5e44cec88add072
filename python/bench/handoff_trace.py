"""Where an awaited call's time goes: timestamps at each hand-over, per call, for the bridge alone
(`_bench_roundtrip`) and for `query`, with results handed over through the loop's inbox (the
default) and, interleaved in the same run, through call_soon_threadsafe with the GIL (the old way).

    maturin develop --release -m python/Cargo.toml --features latency-trace
    .venv/bin/python python/bench/handoff_trace.py [calls]

Needs a build with the `latency-trace` feature (`_native._trace`). Prints p50/p90 per segment.
"""
import asyncio, sys, tempfile, time, statistics
from collections import defaultdict
import voicerag
from voicerag import _native

def pct(v, p):
    v = sorted(v); return v[min(len(v)-1, int(round(p/100*(len(v)-1))))]

async def run(kind, pipeline, n, threadsafe):
    _native._trace(True, threadsafe=threadsafe)
    py = []
    for i in range(n):
        t0 = time.monotonic_ns()
        if kind == "rt":
            await _native._bench_roundtrip()
        else:
            await pipeline.query(f"what did I say about my dog {i%5}?", namespace="bench")
        t1 = time.monotonic_ns()
        py.append((t0, t1))
    ev = _native._trace(False)
    calls = defaultdict(dict)
    for cid, point, t in ev:
        calls[cid][point] = t
    ids = sorted(calls)[-n:]
    return py, [calls[c] for c in ids]

SEGS = [("py call", "py: spawn entered"), ("py: spawn entered", "py: spawned"),
        ("py: spawn entered", "tokio: task started"), ("tokio: task started", "tokio: work done"),
        ("tokio: work done", "tokio: delivered"), ("tokio: work done", "loop: resolving"),
        ("loop: resolving", "loop: resolved"), ("loop: resolved", "py await returned"), ("py call", "py await returned")]

def report(label, py, calls):
    seg = defaultdict(list)
    for (t0, t1), c in zip(py, calls):
        c = dict(c); c["py call"] = t0; c["py await returned"] = t1
        for a, b in SEGS:
            if a in c and b in c:
                seg[f"{a} -> {b}"].append((c[b] - c[a]) / 1000)
    print(label)
    for k, v in seg.items():
        print(f"   {k:<48} p50 {pct(v,50):8.1f} us  p90 {pct(v,90):8.1f}  n={len(v)}")

async def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        p = await voicerag.Pipeline.start(store__data_dir=tmp)
        await asyncio.gather(*(p.remember(f"note {i} about my dog {i%7}", namespace="bench", id=f"m{i}") for i in range(300)))
        for _ in range(20): await p.query("warm up dog", namespace="bench")
        res = defaultdict(lambda: ([], []))
        for rnd in range(4):
            for kind in ("rt", "query"):
                for ts in (False, True):
                    py, calls = await run(kind, p, n // 4, ts)
                    res[(kind, ts)][0].extend(py); res[(kind, ts)][1].extend(calls)
        for (kind, ts), (py, calls) in res.items():
            report(f"{kind} {'call_soon_threadsafe' if ts else 'inbox'}", py, calls)
        await p.shutdown()

asyncio.run(main())
