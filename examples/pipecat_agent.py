"""A Pipecat voice agent with voicerag memory, runnable without API keys.

    make setup && .venv/bin/python examples/pipecat_agent.py

A scripted "STT" pushes interim and final transcriptions as a speech recogniser would; a fake LLM
answers by echoing the memories it was given, so you can see what the real LLM would receive. Two
sessions of one user: what was said in the first is recalled in the second. Run from the
repository root (config.toml names models/ and runtime/); memories go to a temporary directory.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time

from loguru import logger

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
from pipecat.workers.runner import WorkerRunner

import voicerag
from voicerag.memories import MEMORY_HEADER, is_memory_message
from voicerag.pipecat import VoiceragMemory

SESSIONS = [
    ["my sister Ana just moved to Porto", "I am allergic to peanuts, remember that"],
    ["where does my sister live now?", "can you suggest a snack for me?"],
]


class EchoLLM(FrameProcessor):
    """A fake LLM: answers with the memories in its context."""

    def __init__(self) -> None:
        super().__init__()
        self.answered = asyncio.Queue()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, LLMContextFrame):
            await self.push_frame(frame, direction)
            return
        messages = frame.context.get_messages()
        memories = [m["content"] for m in messages if is_memory_message(m.get("content"))]
        user = messages[-1]["content"]
        lines = memories[-1].removeprefix(MEMORY_HEADER).strip().splitlines() if memories else []
        answer = f"(fake LLM) given {len(lines)} memories" + "".join(f"\n        {line}" for line in lines)
        print(f"\n  user> {user}\n  llm > {answer}")
        await self.push_frame(LLMFullResponseStartFrame())
        await self.push_frame(LLMTextFrame(answer))
        await self.push_frame(LLMFullResponseEndFrame())
        await self.answered.put(answer)


async def session(pipeline: voicerag.Pipeline, user: str, conversation: str, turns: list[str]) -> None:
    memory = VoiceragMemory(pipeline, namespace=user, conversation=conversation)  # 1
    context = LLMContext([{"role": "system", "content": "You are a helpful voice assistant."}])
    aggregators = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(user_turn_strategies=ExternalUserTurnStrategies())
    )
    llm = EchoLLM()
    worker = PipelineWorker(
        Pipeline([memory.user(context=context), aggregators.user(), llm, memory.assistant(),
                  aggregators.assistant()]),  # 2
        cancel_on_idle_timeout=False,
    )
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    running = asyncio.create_task(runner.run())
    for text in turns:
        words = text.split()
        ts = str(time.time())
        await worker.queue_frame(UserStartedSpeakingFrame())
        for n in range(2, len(words), 2):  # interim transcripts: voicerag speculates on them
            await worker.queue_frame(InterimTranscriptionFrame(text=" ".join(words[:n]), user_id=user, timestamp=ts))
        await worker.queue_frame(TranscriptionFrame(text=text, user_id=user, timestamp=ts, finalized=True))
        await worker.queue_frame(UserStoppedSpeakingFrame())
        await asyncio.wait_for(llm.answered.get(), 30)
        r = memory.last_result
        print(f"  (voicerag: {len(r.hits)} memories in {r.timings.total_ms:.1f} ms, deadline met: {r.deadline_met})")
    await worker.queue_frame(EndFrame())
    await running


async def main() -> None:
    logger.remove()
    logger.add(sys.stderr, level="WARNING")  # Pipecat logs every frame at DEBUG
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as data_dir:
        pipeline = await voicerag.Pipeline.start(store__data_dir=data_dir)  # 3
        try:
            for i, turns in enumerate(SESSIONS, start=1):
                print(f"\n=== session {i} ===")
                await session(pipeline, "alice", f"session-{i}", turns)
                # Let the writer commit this session's turns before the next session starts.
                while pipeline.health()["memories_pending"]:
                    await asyncio.sleep(0.05)
        finally:
            await pipeline.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
