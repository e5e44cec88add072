"""A real Pipecat pipeline around voicerag's processors, with a recording fake LLM in the LLM's place."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable

from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InterimTranscriptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.turns.user_turn_strategies import ExternalUserTurnStrategies

from voicerag.memories import MEMORY_HEADER, is_memory_message
from voicerag.pipecat import VoiceragMemory


class RecordingLLM(FrameProcessor):
    """Stands where the LLM service stands: records every context it is asked to answer and
    answers with the memories it was given (a fake LLM that needs no API key)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.contexts: asyncio.Queue[list[dict]] = asyncio.Queue()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            messages = [dict(m) for m in frame.context.get_messages()]
            memories = [m["content"] for m in messages if is_memory_message(m.get("content"))]
            recalled = memories[-1].removeprefix(MEMORY_HEADER).strip() if memories else "nothing"
            await self.push_frame(LLMFullResponseStartFrame())
            await self.push_frame(LLMTextFrame(f"I remember: {recalled}"))
            await self.push_frame(LLMFullResponseEndFrame())
            await self.contexts.put(messages)
        else:
            await self.push_frame(frame, direction)


class AgentUnderTest:
    """One user's voice agent: [voicerag user, user aggregator, recording LLM, voicerag assistant,
    assistant aggregator], with frames queued as an STT service and its VAD push them."""

    def __init__(self, source: Any, namespace: str, conversation: str, direct_context: bool = False) -> None:
        # A generous guard: a loaded test machine must not turn a late answer into no answer.
        self.memory = VoiceragMemory(source, namespace=namespace, conversation=conversation, timeout_s=30)
        self.context = LLMContext([{"role": "system", "content": "You are a helpful assistant."}])
        self.user = self.memory.user(context=self.context if direct_context else None)
        self.llm = RecordingLLM()
        aggregators = LLMContextAggregatorPair(
            self.context,
            user_params=LLMUserAggregatorParams(user_turn_strategies=ExternalUserTurnStrategies()),
        )
        self.worker = PipelineWorker(
            Pipeline([self.user, aggregators.user(), self.llm, self.memory.assistant(),
                      aggregators.assistant()]),
            cancel_on_idle_timeout=False,
        )
        self.started = asyncio.Event()

        @self.worker.event_handler("on_pipeline_started")
        async def _started(worker, frame):
            self.started.set()

    async def say(
        self,
        interims: list[str],
        final: str,
        before_final: Callable[[], Awaitable[None]] | None = None,
        timeout_s: float = 60.0,
    ) -> list[dict]:
        """Queues one user turn and returns the context the LLM received for it. ``before_final``
        runs between the interims and the final (a real STT leaves time between them)."""
        await asyncio.wait_for(self.started.wait(), timeout_s)
        ts = str(time.time())
        frames: list[Frame] = [UserStartedSpeakingFrame()]
        frames += [InterimTranscriptionFrame(text=t, user_id=self.memory.namespace, timestamp=ts)
                   for t in interims]
        for f in frames:
            await self.worker.queue_frame(f)
        if before_final is not None:
            await asyncio.wait_for(before_final(), timeout_s)
        frames = [
            TranscriptionFrame(text=final, user_id=self.memory.namespace, timestamp=ts, finalized=True),
            UserStoppedSpeakingFrame(),
        ]
        for f in frames:
            await self.worker.queue_frame(f)
        return await asyncio.wait_for(self.llm.contexts.get(), timeout_s)

    async def end(self) -> None:
        await self.worker.queue_frame(EndFrame())
