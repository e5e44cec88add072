"""voicerag as a Pipecat processor pair: recall before the user aggregator, remember the replies.

    memory = VoiceragMemory(pipeline, namespace=user_id, conversation=session_id)
    Pipeline([transport.input(), stt, memory.user(), aggregators.user(), llm,
              memory.assistant(), tts, transport.output(), aggregators.assistant()])

``memory.user()`` goes right after the STT service. Interim transcriptions are submitted as partials
(voicerag speculates: embeds and searches early, so the final's recall is ready sooner) and passed on
unchanged. On a final :class:`TranscriptionFrame` it waits for the final's recall, which voicerag
answers by the pipeline's deadline (``pipeline.budget_ms``), and pushes the memories as one system
message (an :class:`LLMMessagesTransformFrame` that also drops the previous turn's memory message,
so recalls do not pile up) *before* the transcription, so the user aggregator has them in the
context when it runs the LLM. Given the aggregator's context (``memory.user(context=context)``), it
applies that change to the context itself instead, one frame fewer per turn. The final itself becomes a memory, id ``<conversation>/<utterance>``.

``memory.assistant()`` goes after the LLM: each complete LLM response becomes a memory once, id
``<conversation>/<utterance>-reply`` (``-reply2``, ... for further responses in the same turn).

``source`` is an in-process :class:`voicerag.Pipeline` or a :class:`voicerag.BusClient` connected
to ``voicerag serve`` over NATS: both take the same calls.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Protocol

from loguru import logger
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InterimTranscriptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMMessagesTransformFrame,
    LLMTextFrame,
    TranscriptionFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from voicerag._native import ContextResult, VoiceragError
from voicerag.memories import ConversationTurns, format_memories, is_memory_message, watch, within


class ContextSource(Protocol):
    """What the processors call: :class:`voicerag.Pipeline` and :class:`voicerag.BusClient`."""

    def submit(self, transcript: dict[str, Any]) -> Any: ...
    async def context(self, transcript: dict[str, Any]) -> ContextResult: ...
    def reply(self, text: str, *, namespace: str, conversation: str, utterance: str) -> Any: ...


def _replace_memories(message: dict[str, Any] | None) -> Callable[[list], list]:
    """A context transform: drop earlier voicerag memory messages, append ``message``."""

    def transform(messages: list) -> list:
        kept = [m for m in messages if not (isinstance(m, dict) and is_memory_message(m.get("content")))]
        if message is not None:
            kept.append(message)
        return kept

    return transform


class VoiceragMemory(ConversationTurns):
    """Shared state of one conversation's processor pair: ids, the current turn, the last recall.
    Takes :class:`~voicerag.memories.ConversationTurns`'s arguments (``source`` is a
    :class:`ContextSource`)."""

    def user(self, *, context: Any = None, **kwargs: Any) -> "VoiceragUserProcessor":
        """The processor to place after the STT service (one per pipeline). With ``context``
        (the ``LLMContext`` the user aggregator was made with), the memory message is put into it
        directly instead of through a frame: one frame fewer through the pipeline every turn. The
        change is then made when this processor handles the final, not when the aggregator reaches
        it: the same, unless the aggregator is still behind on earlier frames."""
        return VoiceragUserProcessor(self, context=context, **kwargs)

    def assistant(self, **kwargs: Any) -> "VoiceragAssistantProcessor":
        """The processor to place after the LLM service (one per pipeline)."""
        return VoiceragAssistantProcessor(self, **kwargs)

    def interim(self, text: str) -> None:
        """Submits an interim transcript of the current utterance (speculation)."""
        if text.strip():
            try:
                self.source.submit(self._transcript(text, False))
            except (VoiceragError, ValueError, TypeError) as e:
                logger.warning(f"voicerag: interim of {self.conversation}/{self.utterance} not submitted: {e}")

    async def final(self, text: str) -> ContextResult | None:
        """Submits the current utterance's final and returns its recall (``None`` past the guard
        timeout); the next transcript starts a new utterance."""
        transcript = self._transcript(text, True)
        self._last_final_utterance = self.utterance
        self._replies_this_turn = 0
        self._turn += 1
        try:
            result = await within(self.source.context(transcript), self.timeout_s)
        except asyncio.TimeoutError:
            logger.warning(
                f"voicerag: no context for {self.conversation}/{transcript['utterance']} within "
                f"{self.timeout_s}s; the turn goes on without memories"
            )
            return None
        except (VoiceragError, ValueError, TypeError) as e:
            # The conversation must go on: the turn proceeds without memories, loudly.
            logger.error(f"voicerag: no context for {self.conversation}/{transcript['utterance']}: {e}")
            return None
        self.last_result = result
        if self.on_context is not None:
            self.on_context(result)
        return result

    def reply(self, text: str) -> None:
        """Remembers a complete assistant response of the current turn, once."""
        if not text.strip():
            return
        base = self._last_final_utterance or "u0"
        self._replies_this_turn += 1
        suffix = "" if self._replies_this_turn == 1 else str(self._replies_this_turn)
        try:
            outcome = self.source.reply(
                text,
                namespace=self.namespace,
                conversation=self.conversation,
                utterance=f"{base}-reply{suffix}",
            )
        except (VoiceragError, ValueError, TypeError) as e:
            logger.error(f"voicerag: reply {self.conversation}/{base}-reply{suffix} not remembered: {e}")
            return
        watch(outcome, f"remembering the reply {self.conversation}/{base}-reply{suffix}")


class VoiceragUserProcessor(FrameProcessor):
    """After the STT service: speculates on interims, adds the final's memories to the context."""

    def __init__(self, memory: VoiceragMemory, *, context: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._memory = memory
        if context is not None and not callable(getattr(context, "transform_messages", None)):
            raise TypeError("context must be a Pipecat LLMContext (it has no transform_messages)")
        self._context = context
        #: Milliseconds from receiving each final frame to pushing it on (recall included).
        self.final_latencies_ms: list[float] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM and isinstance(frame, InterimTranscriptionFrame):
            self._memory.interim(frame.text)
        elif direction == FrameDirection.DOWNSTREAM and isinstance(frame, TranscriptionFrame):
            if frame.text.strip():
                started = time.perf_counter()
                result = await self._memory.final(frame.text)
                message = None
                if result is not None:
                    text = format_memories(result)
                    if text is not None:
                        message = {"role": "system", "content": text}
                if self._context is not None:
                    # The aggregator's own context, changed before it receives the transcription
                    # (what it does with the frame below, without the frame's trip).
                    self._context.transform_messages(_replace_memories(message))
                else:
                    await self.push_frame(
                        LLMMessagesTransformFrame(transform=_replace_memories(message), run_llm=False)
                    )
                await self.push_frame(frame, direction)
                self.final_latencies_ms.append((time.perf_counter() - started) * 1000.0)
                return
        await self.push_frame(frame, direction)


class VoiceragAssistantProcessor(FrameProcessor):
    """After the LLM service: each complete response becomes a memory, once."""

    def __init__(self, memory: VoiceragMemory, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._memory = memory
        self._parts: list[str] | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            if isinstance(frame, LLMFullResponseStartFrame):
                self._parts = []
            elif isinstance(frame, LLMTextFrame) and self._parts is not None:
                self._parts.append(frame.text)
            elif isinstance(frame, (LLMFullResponseEndFrame, EndFrame)) and self._parts is not None:
                text, self._parts = "".join(self._parts), None
                self._memory.reply(text)
        await self.push_frame(frame, direction)
