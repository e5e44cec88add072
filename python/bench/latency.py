"""Latency of voicerag from Python against the same calls measured in Rust, in one run.

    .venv/bin/python python/bench/latency.py [--memories 10000] [--n 2000]

Three measurements on one in-process pipeline (config.toml's models; run from the repository root):
- `query`: `await pipeline.query(...)` timed in Python, against `PipelineHandle::query` timed in
  Rust (`Pipeline._bench_rust("query")`, the same request through the same pipeline);
- `final`: a final TranscriptionFrame through voicerag's Pipecat processor in a real Pipecat
  pipeline (from the processor receiving the frame to pushing it on, memories added), against a
  final submitted and awaited in Rust (`_bench_rust("final")`).
Blocks of each alternate, so machine load drifts over all of them alike. The Python layer's overhead
is the difference of the p50s; issue 12 asks for under 0.2 ms. Timings vary with load: run it on a
quiet machine (a release build of the package gives the figures a deployment sees:
`maturin develop --release -m python/Cargo.toml`).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time

from loguru import logger
from pipecat.frames.frames import EndFrame, Frame, TranscriptionFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

import voicerag
from voicerag.pipecat import VoiceragMemory

TOPICS = ["dog", "sister", "train", "doctor", "garden", "birthday", "coffee", "laptop", "holiday", "piano"]
QUERIES = [f"what did I say about my {t}?" for t in TOPICS]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def row(name: str, micros: list[float]) -> tuple[float, float]:
    p50, p99 = percentile(micros, 50) / 1000, percentile(micros, 99) / 1000
    print(f"  {name:<44} n={len(micros):>5}  p50 {p50:8.3f} ms  p99 {p99:8.3f} ms  mean {statistics.fmean(micros) / 1000:8.3f} ms")
    return p50, p99


class Arrivals(FrameProcessor):
    """After the processor: signals each final transcription's arrival."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived: asyncio.Queue[None] = asyncio.Queue()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame):
            self.arrived.put_nowait(None)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memories", type=int, default=10000, help="memories in the namespace")
    parser.add_argument("--n", type=int, default=2000, help="calls of each kind")
    parser.add_argument("--block", type=int, default=50, help="calls per alternating block")
    parser.add_argument("--data-dir", help="default: a temporary directory")
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")

    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        pipeline = await voicerag.Pipeline.start(store__data_dir=args.data_dir or tmp)
        try:
            started = time.perf_counter()
            await asyncio.gather(*(
                pipeline.remember(f"note {i}: something about my {TOPICS[i % len(TOPICS)]} number {i}",
                                  namespace="bench", id=f"m{i}", conversation=f"c{i % 50}")
                for i in range(args.memories)
            ))
            print(f"{args.memories} memories stored in {time.perf_counter() - started:.1f} s")

            memory = VoiceragMemory(pipeline, namespace="bench", conversation="pipecat", timeout_s=10)
            user = memory.user()
            arrivals = Arrivals()
            worker = PipelineWorker(Pipeline([user, arrivals]), cancel_on_idle_timeout=False)
            runner = WorkerRunner(handle_sigint=False)
            await runner.add_workers(worker)
            running = asyncio.create_task(runner.run())

            py_query: list[float] = []
            rust_query: list[float] = []
            rust_final: list[float] = []
            for q in QUERIES * 2:  # warm up every path
                await pipeline.query(q, namespace="bench")
            await pipeline._bench_rust("final", QUERIES, "bench", "warmup", 10)
            done = 0
            while done < args.n:
                k = min(args.block, args.n - done)
                for i in range(k):
                    t0 = time.perf_counter()
                    await pipeline.query(QUERIES[(done + i) % len(QUERIES)], namespace="bench")
                    py_query.append((time.perf_counter() - t0) * 1e6)
                rust_query += await pipeline._bench_rust("query", QUERIES, "bench", "", k)
                for i in range(k):
                    ts = str(time.time())
                    await worker.queue_frame(TranscriptionFrame(
                        text=QUERIES[(done + i) % len(QUERIES)], user_id="bench", timestamp=ts, finalized=True))
                    await asyncio.wait_for(arrivals.arrived.get(), 30)
                rust_final += await pipeline._bench_rust("final", QUERIES, "bench", f"rust-{done}", k)
                done += k
            py_final = [ms * 1000 for ms in user.final_latencies_ms]
            await worker.queue_frame(EndFrame())
            await running

            print("latency (one in-process pipeline, reranker as configured):")
            pq, _ = row("query: Python await pipeline.query", py_query)
            rq, _ = row("query: Rust PipelineHandle::query", rust_query)
            pf, _ = row("final: Pipecat processor (recall + context)", py_final)
            rf, _ = row("final: Rust submit + await its result", rust_final)
            print(f"Python overhead, p50: query {pq - rq:+.3f} ms, final through Pipecat {pf - rf:+.3f} ms "
                  f"(issue 12 target: < 0.2 ms)")
            health = pipeline.health()
            print(f"deadline missed: {health['counters']['deadline_missed']} of {health['counters']['results']} results")
            return 0
        finally:
            await pipeline.shutdown()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
