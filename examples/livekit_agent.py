"""A LiveKit Agents agent with voicerag memory, runnable without API keys or a LiveKit server.

    make setup && .venv/bin/python examples/livekit_agent.py

The agent is a real `livekit.agents.Agent` whose `on_user_turn_completed` calls voicerag's hook;
without a room, this script plays the session's part: it feeds interim transcripts the way the
session's `user_input_transcribed` event would, calls `on_user_turn_completed` with a real
`ChatContext`, lets a fake LLM echo the memories it was given, and adds its answer through the
`conversation_item_added` event. Run from the repository root; memories go to a temporary directory.
"""

from __future__ import annotations

import asyncio
import tempfile

from livekit.agents import Agent
from livekit.agents.llm import ChatContext, ChatMessage
from livekit.agents.voice.events import ConversationItemAddedEvent, UserInputTranscribedEvent

import voicerag
from voicerag.livekit import VoiceragTurnHook
from voicerag.memories import MEMORY_HEADER, is_memory_message


class MemoryAgent(Agent):
    def __init__(self, memory: VoiceragTurnHook) -> None:
        super().__init__(instructions="You are a helpful voice assistant.")
        self.memory = memory

    async def on_user_turn_completed(self, turn_ctx: ChatContext, new_message: ChatMessage) -> None:
        await self.memory.on_user_turn_completed(turn_ctx, new_message)


class ScriptedSession:
    """Plays an AgentSession's part: events out, turns in (no room, no STT, no LLM service)."""

    def __init__(self) -> None:
        self.handlers: dict[str, list] = {}
        self.chat_ctx = ChatContext.empty()

    def on(self, event: str, callback) -> None:
        self.handlers.setdefault(event, []).append(callback)

    def emit(self, event: str, payload) -> None:
        for callback in self.handlers.get(event, []):
            callback(payload)

    async def user_turn(self, agent: MemoryAgent, text: str) -> None:
        words = text.split()
        for n in range(2, len(words), 2):
            self.emit("user_input_transcribed", UserInputTranscribedEvent(transcript=" ".join(words[:n]), is_final=False))
        self.emit("user_input_transcribed", UserInputTranscribedEvent(transcript=text, is_final=True))
        message = ChatMessage(role="user", content=[text])
        self.chat_ctx.items.append(message)
        await agent.on_user_turn_completed(self.chat_ctx, message)
        # The fake LLM: echoes the memories it was given.
        memories = [m.text_content for m in self.chat_ctx.messages() if is_memory_message(m.text_content)]
        lines = memories[-1].removeprefix(MEMORY_HEADER).strip().splitlines() if memories else []
        answer = f"(fake LLM) given {len(lines)} memories" + "".join(f"\n        {line}" for line in lines)
        print(f"\n  user> {text}\n  llm > {answer}")
        reply = ChatMessage(role="assistant", content=[answer])
        self.chat_ctx.items.append(reply)
        self.emit("conversation_item_added", ConversationItemAddedEvent(item=reply))


async def main() -> None:
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as data_dir:
        pipeline = await voicerag.Pipeline.start(store__data_dir=data_dir)
        try:
            for i, turns in enumerate(
                [["my sister Ana just moved to Porto", "I am allergic to peanuts"],
                 ["where does my sister live now?", "can you suggest a snack for me?"]],
                start=1,
            ):
                print(f"\n=== session {i} ===")
                hook = VoiceragTurnHook(pipeline, namespace="alice", conversation=f"room-{i}")
                session = ScriptedSession()
                hook.attach(session)
                agent = MemoryAgent(hook)
                for text in turns:
                    await session.user_turn(agent, text)
                while pipeline.health()["memories_pending"]:
                    await asyncio.sleep(0.05)
        finally:
            await pipeline.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
