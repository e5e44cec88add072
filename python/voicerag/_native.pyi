"""Type stubs of voicerag's native module (Rust, PyO3)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import Any, Literal, TypedDict

from typing_extensions import NotRequired

__version__: str

class VoiceragError(Exception):
    """Base of every voicerag error; the message is the Rust error's."""

class ConfigError(VoiceragError):
    """Invalid configuration, or a file it names (model, runtime library) is missing."""

class PipelineClosedError(VoiceragError):
    """The pipeline (or bus client) is shutting down or has stopped."""

class BusError(VoiceragError):
    """NATS could not be reached, or voicerag serve did not answer."""

class Transcript(TypedDict):
    """What ``submit`` and ``context`` take (a plain dict)."""

    namespace: str
    conversation: str
    utterance: str
    text: str
    is_final: NotRequired[bool]  # default False
    speaker: NotRequired[str]  # default "user"

class Hit:
    """A recalled memory."""

    id: str
    text: str
    score: float
    rerank_score: float | None
    vector_rank: int | None
    bm25_rank: int | None
    similarity: float | None
    conversation: str
    speaker: str
    ts_ms: int
    def to_dict(self) -> dict[str, Any]: ...

class Timings:
    """Wall time per stage, in milliseconds."""

    embed_ms: float
    search_ms: float
    rerank_ms: float
    total_ms: float
    def to_dict(self) -> dict[str, float]: ...

class ContextResult:
    """The context recalled for one final transcript or one query."""

    namespace: str
    conversation: str
    utterance: str
    is_final: bool
    text: str
    hits: list[Hit]
    capped: int
    floored: int
    rerank: Literal["off", "full", "partial", "skipped", "failed"]
    rerank_detail: str | None
    degraded: str | None
    timings: Timings
    deadline_met: bool
    def to_dict(self) -> dict[str, Any]: ...

class ResultStream(AsyncIterator[ContextResult]):
    def __aiter__(self) -> ResultStream: ...
    def __anext__(self) -> Awaitable[ContextResult]: ...

Mode = Literal["hybrid", "vector", "bm25"]
Override = str | int | float | bool | os.PathLike[str]

class Pipeline:
    """The in-process pipeline: models, memory store and supervised stages, in this process."""

    @staticmethod
    def start(config: str | os.PathLike[str] | None = None, **overrides: Override) -> Awaitable[Pipeline]:
        """Loads the models, opens the store, starts the pipeline. ``config``: a TOML file
        (default ./config.toml when present). ``overrides``: ``section__key=value``; they win over
        ``VOICERAG_SECTION__KEY`` environment variables, which win over the file."""
    def submit(self, transcript: Transcript | Mapping[str, Any]) -> None: ...
    def context(self, transcript: Transcript | Mapping[str, Any]) -> Awaitable[ContextResult]: ...
    def reply(self, text: str, *, namespace: str, conversation: str, utterance: str) -> None: ...
    def results(self) -> ResultStream: ...
    def query(
        self,
        text: str,
        *,
        namespace: str,
        top_k: int | None = None,
        conversation: str | None = None,
        mode: Mode | None = None,
        budget_ms: float | None = None,
    ) -> Awaitable[ContextResult]: ...
    def remember(
        self,
        text: str,
        *,
        namespace: str,
        id: str,
        conversation: str = "",
        speaker: str = "user",
        ts_ms: int | None = None,
    ) -> Awaitable[None]: ...
    def forget(
        self, *, namespace: str, id: str | None = None, conversation: str | None = None
    ) -> Awaitable[int]: ...
    def health(self) -> dict[str, Any]: ...
    def shutdown(self) -> Awaitable[None]: ...
    @property
    def closed(self) -> bool: ...
    def _bench_rust(
        self,
        kind: Literal["query", "final"],
        texts: list[str],
        namespace: str,
        conversation: str,
        n: int,
        *,
        pause_ms: float = 0.0,
        stages: bool = False,
    ) -> Awaitable[list[float]] | Awaitable[list[list[float]]]: ...

class BusClient:
    """The same calls, to ``voicerag serve`` over NATS (wire v2)."""

    @staticmethod
    def connect(
        url: str,
        config: str | os.PathLike[str] | None = None,
        timeout_ms: int = 1000,
        context_idle_ms: int = 60000,
        max_conversations: int = 1024,
        **overrides: Override,
    ) -> Awaitable[BusClient]:
        """A conversation's context subscription closes after ``context_idle_ms`` without a
        ``context()`` call; at most ``max_conversations`` keep one (least recently used idle first)."""
    def submit(self, transcript: Transcript | Mapping[str, Any]) -> None: ...
    def context(self, transcript: Transcript | Mapping[str, Any]) -> Awaitable[ContextResult]: ...
    def reply(self, text: str, *, namespace: str, conversation: str, utterance: str) -> Awaitable[None]: ...
    def query(
        self,
        text: str,
        *,
        namespace: str,
        top_k: int | None = None,
        conversation: str | None = None,
        mode: Mode | None = None,
    ) -> Awaitable[ContextResult]: ...
    def forget(
        self, *, namespace: str, id: str | None = None, conversation: str | None = None
    ) -> Awaitable[dict[str, Any]]: ...
    def health(self) -> Awaitable[dict[str, Any]]: ...
    def close(self) -> Awaitable[None]: ...

def _panic_for_tests(where_: Literal["sync", "async", "inline", "inline-woken"]) -> Any: ...
def _loop_polled_for_tests(value: int, ms: int = 0) -> Awaitable[int]:
    """Test support: ``value`` after ``ms`` ms on tokio's timer, polled by the loop (as ``query``)."""
def _bench_roundtrip() -> Awaitable[None]:
    """Benchmark support: completes as soon as the tokio runtime has run it (the bridge alone)."""
