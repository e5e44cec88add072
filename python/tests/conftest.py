"""Shared test setup: configuration overrides pointing at this checkout's models and runtime.

The real int8 MiniLM (models/, built by `make setup`) is used when present; with
VOICERAG_REQUIRE_MODELS=1 (as `make test` sets) its absence fails the tests instead of falling
back to the tiny fixture embedder, whose vectors mean nothing (its runs lean on BM25).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest

ROOT = Path(__file__).resolve().parents[2]
REAL_EMBEDDER = ROOT / "models" / "all-MiniLM-L6-v2"
TINY_EMBEDDER = ROOT / "fixtures" / "models" / "tiny-embedder"
RUNTIME = ROOT / "runtime" / "libonnxruntime.so"


def overrides(data_dir: Path, **extra: Any) -> dict[str, Any]:
    """Pipeline.start keyword overrides for a test: own data dir, generous budget (the machine
    running the tests may be loaded: deadlines are tested in Rust on a paused clock)."""
    if (REAL_EMBEDDER / "model.onnx").exists():
        embedder: dict[str, Any] = {"embedder__model_dir": str(REAL_EMBEDDER)}
    elif os.environ.get("VOICERAG_REQUIRE_MODELS") == "1":
        raise RuntimeError(f"VOICERAG_REQUIRE_MODELS=1 but {REAL_EMBEDDER} has no model.onnx")
    else:
        embedder = {"embedder__model_dir": str(TINY_EMBEDDER), "pipeline__min_similarity": 0.0}
    return {
        **embedder,
        "runtime__library": str(RUNTIME),
        "store__data_dir": str(data_dir),
        "store__map_size_mib": 64,
        "pipeline__budget_ms": 3000,
        **extra,
    }


async def wait_until(
    condition: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 30.0
) -> None:
    """Polls ``condition`` until it holds; fails naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"
