"""voicerag as a LiveKit Agents hook: memories added to the turn's chat context, turns remembered.

    class MyAgent(Agent):
        async def on_user_turn_completed(self, turn_ctx, new_message):
            await self.memory.on_user_turn_completed(turn_ctx, new_message)

    agent.memory = VoiceragTurnHook(pipeline, namespace=user_id, conversation=room_name)
    agent.memory.attach(session)     # interim transcripts speculate; assistant replies are remembered

On each completed user turn the hook submits the user's text as a final (it becomes a memory, id
``<conversation>/<utterance>``), waits for its recall (answered by voicerag's deadline) and puts the
memories in ``turn_ctx`` as one system message just before the new user message, replacing the
previous turn's memory message. ``attach(session)`` listens to the session's
``user_input_transcribed`` events (interims are submitted as partials of the current utterance:
voicerag speculates) and ``conversation_item_added`` events (each assistant message is remembered
once, id ``<conversation>/<utterance>-reply``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from livekit.agents.llm import ChatContext, ChatMessage

from voicerag._native import ContextResult, VoiceragError
from voicerag.memories import ConversationTurns, format_memories, is_memory_message, watch, within

logger = logging.getLogger("voicerag.livekit")


class VoiceragTurnHook(ConversationTurns):
    """One conversation's link between a LiveKit agent and voicerag."""

    def __init__(self, source: Any, **turns: Any) -> None:
        """Takes :class:`~voicerag.memories.ConversationTurns`'s arguments."""
        super().__init__(source, **turns)
        self._remembered_items: set[str] = set()

    def interim(self, text: str) -> None:
        """Feeds an interim transcript of the current utterance (voicerag speculates on it)."""
        if text.strip():
            try:
                self.source.submit(self._transcript(text, False))
            except (VoiceragError, ValueError, TypeError) as e:
                logger.warning("voicerag: interim of %s/%s not submitted: %s", self.conversation, self.utterance, e)

    async def on_user_turn_completed(
        self, turn_ctx: ChatContext, new_message: ChatMessage
    ) -> ContextResult | None:
        """Recalls for ``new_message``, adds the memories to ``turn_ctx``, remembers the turn."""
        text = new_message.text_content or ""
        if not text.strip():
            return None
        transcript = self._transcript(text, True)
        self._last_final_utterance = self.utterance
        self._replies_this_turn = 0
        self._turn += 1
        try:
            result = await within(self.source.context(transcript), self.timeout_s)
        except asyncio.TimeoutError:
            logger.warning(
                "voicerag: no context for %s/%s within %ss; the turn goes on without memories",
                self.conversation,
                transcript["utterance"],
                self.timeout_s,
            )
            return None
        except (VoiceragError, ValueError, TypeError) as e:
            # The conversation must go on: the turn proceeds without memories, loudly.
            logger.error("voicerag: no context for %s/%s: %s", self.conversation, transcript["utterance"], e)
            return None
        self.last_result = result
        if self.on_context is not None:
            self.on_context(result)
        add_memories(turn_ctx, result, before=new_message)
        return result

    def remember_reply(self, text: str, item_id: str | None = None) -> None:
        """Remembers an assistant message of the current turn, once (per LiveKit item id)."""
        if not text.strip() or (item_id is not None and item_id in self._remembered_items):
            return
        if item_id is not None:
            self._remembered_items.add(item_id)
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
            logger.error("voicerag: reply %s/%s-reply%s not remembered: %s", self.conversation, base, suffix, e)
            return
        watch(outcome, f"remembering the reply {self.conversation}/{base}-reply{suffix}")

    def on_user_input_transcribed(self, event: Any) -> None:
        """Handler for ``user_input_transcribed``: interims are submitted for speculation (the
        final arrives through ``on_user_turn_completed``)."""
        if not event.is_final:
            self.interim(event.transcript)

    def on_conversation_item_added(self, event: Any) -> None:
        """Handler for ``conversation_item_added``: assistant messages are remembered."""
        item = event.item
        if isinstance(item, ChatMessage) and item.role == "assistant" and not item.interrupted:
            self.remember_reply(item.text_content or "", item_id=item.id)

    def attach(self, session: Any) -> None:
        """Subscribes to an ``AgentSession``'s transcription and conversation events."""
        session.on("user_input_transcribed", self.on_user_input_transcribed)
        session.on("conversation_item_added", self.on_conversation_item_added)


def add_memories(
    chat_ctx: ChatContext, result: ContextResult, *, before: ChatMessage | None = None
) -> ChatMessage | None:
    """Replaces the memory message in ``chat_ctx`` with ``result``'s (placed just before
    ``before`` when that message is in the context, else at the end); returns it, or ``None``
    (and removes the old one) when nothing was recalled."""
    chat_ctx.items = [
        item
        for item in chat_ctx.items
        if not (isinstance(item, ChatMessage) and is_memory_message(item.text_content))
    ]
    text = format_memories(result)
    if text is None:
        return None
    message = ChatMessage(role="system", content=[text])
    index = next(
        (i for i, item in enumerate(chat_ctx.items) if before is not None and item.id == before.id),
        len(chat_ctx.items),
    )
    chat_ctx.items.insert(index, message)
    return message
