"""voicerag: memory and context for voice agents, on time, in-process.

    pipeline = await voicerag.Pipeline.start()            # models, memory store, supervised stages
    result = await pipeline.query("where do I live?", namespace="alice")
    for hit in result.hits: print(hit.text)

The pipeline runs in Rust on its own threads: every awaitable releases the GIL and never blocks the
event loop. Integrations: :mod:`voicerag.pipecat` (a Pipecat processor pair) and
:mod:`voicerag.livekit` (a LiveKit Agents hook). Errors are :class:`VoiceragError` subclasses (or
``ValueError`` / ``TypeError`` for bad input) carrying the Rust message.
"""

from voicerag._native import (
    BusClient,
    BusError,
    ConfigError,
    ContextResult,
    Hit,
    Pipeline,
    PipelineClosedError,
    ResultStream,
    Timings,
    VoiceragError,
    __version__,
)
from voicerag.memories import format_memories

__all__ = [
    "BusClient",
    "BusError",
    "ConfigError",
    "ContextResult",
    "Hit",
    "Pipeline",
    "PipelineClosedError",
    "ResultStream",
    "Timings",
    "VoiceragError",
    "format_memories",
    "__version__",
]
