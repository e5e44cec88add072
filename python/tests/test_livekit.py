"""voicerag's LiveKit Agents hook on real livekit-agents objects: ChatContext, ChatMessage, the
session events' own types."""

from __future__ import annotations

import asyncio

from livekit.agents.llm import ChatContext, ChatMessage
from livekit.agents.voice.events import ConversationItemAddedEvent, UserInputTranscribedEvent

import voicerag
from conftest import overrides, wait_until
from voicerag.livekit import VoiceragTurnHook
from voicerag.memories import is_memory_message

ALICE = [("a1", "my dog Rex loves running on the beach"), ("a2", "my sister Ana lives in Porto")]
BOB = [("b1", "my dog Bruno is afraid of the beach"), ("b2", "I work night shifts at the hospital")]


class FakeSession:
    """The two `AgentSession.on` subscriptions the hook makes, fired as the session fires them."""

    def __init__(self) -> None:
        self.handlers: dict[str, list] = {}

    def on(self, event: str, callback) -> None:
        self.handlers.setdefault(event, []).append(callback)

    def emit(self, event: str, payload) -> None:
        for cb in self.handlers.get(event, []):
            cb(payload)


def memory_texts(ctx: ChatContext) -> list[str]:
    return [m.text_content for m in ctx.messages() if is_memory_message(m.text_content)]


def test_turn_hook_adds_the_users_memories_and_remembers_the_turn(data_dir):
    async def run():
        pipeline = await voicerag.Pipeline.start(**overrides(data_dir, pipeline__emit_partials=True))
        for ns, memories in (("alice", ALICE), ("bob", BOB)):
            for mid, text in memories:
                await pipeline.remember(text, namespace=ns, id=mid, conversation="c0")
        results = pipeline.results()
        try:
            hooks = {ns: VoiceragTurnHook(pipeline, namespace=ns, conversation=f"room-{ns}", timeout_s=30)
                     for ns in ("alice", "bob")}
            sessions = {ns: FakeSession() for ns in hooks}
            for ns, hook in hooks.items():
                hook.attach(sessions[ns])

            # Interim transcripts reach voicerag as partials of the current utterance.
            sessions["alice"].emit("user_input_transcribed",
                                   UserInputTranscribedEvent(transcript="what does my dog", is_final=False))
            partial = await asyncio.wait_for(results.__anext__(), 60)
            assert (partial.namespace, partial.utterance, partial.is_final) == ("alice", "u1", False)

            contexts = {}
            for ns, hook in hooks.items():
                ctx = ChatContext.empty()
                ctx.add_message(role="system", content="You are a helpful assistant.")
                new_message = ChatMessage(role="user", content=["what does my dog love to do?"])
                ctx.items.append(new_message)
                result = await hook.on_user_turn_completed(ctx, new_message)
                assert result is not None and result.deadline_met and result.degraded is None
                contexts[ns] = (ctx, new_message)

            for ns, mine, theirs in (("alice", ALICE, BOB), ("bob", BOB, ALICE)):
                ctx, new_message = contexts[ns]
                recalled = memory_texts(ctx)
                assert len(recalled) == 1 and mine[0][1] in recalled[0]
                assert not any(text in recalled[0] for _, text in theirs)
                items = ctx.messages()
                assert items[-1] is new_message and is_memory_message(items[-2].text_content)

            # The assistant's reply is remembered once, even if the event fires twice.
            reply = ChatMessage(role="assistant", content=["Rex loves running on the beach."])
            for _ in range(2):
                sessions["alice"].emit("conversation_item_added", ConversationItemAddedEvent(item=reply))

            async def remembered() -> bool:
                q = await pipeline.query("what does my dog love to do?", namespace="alice", top_k=10)
                ids = [h.id for h in q.hits]
                return "room-alice/u1" in ids and "room-alice/u1-reply" in ids

            await wait_until(remembered, "alice's turn and reply as memories")
            q = await pipeline.query("what does my dog love to do?", namespace="bob", top_k=10)
            assert all(not h.id.startswith("room-alice/") for h in q.hits)

            # The next turn replaces the memory message instead of adding a second one.
            ctx, _ = contexts["alice"]
            second = ChatMessage(role="user", content=["where does my sister live?"])
            ctx.items.append(second)
            await hooks["alice"].on_user_turn_completed(ctx, second)
            recalled = memory_texts(ctx)
            assert len(recalled) == 1 and ALICE[1][1] in recalled[0]
            assert ctx.messages()[-1] is second
        finally:
            await pipeline.shutdown()

    asyncio.run(run())
