"""How recalled memories are put in front of a language model: one system message, marked so an
integration can replace the previous turn's recall instead of piling them up."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, TypeVar

from voicerag._native import ContextResult

#: First line of every memory message voicerag adds to an LLM context.
MEMORY_HEADER = "Relevant memories of this user (recalled by voicerag; may be incomplete):"


def format_memories(result: ContextResult) -> str | None:
    """The memory message's text for ``result``, or ``None`` when nothing was recalled."""
    hits = result.hits  # each read makes a new list: read once
    if not hits:
        return None
    lines = [MEMORY_HEADER]
    for hit in hits:
        who = "the assistant said" if hit.speaker == "agent" else f"{hit.speaker or 'user'} said"
        lines.append(f"- ({who}) {hit.text}")
    return "\n".join(lines)


def is_memory_message(content: object) -> bool:
    """Whether a message's content is a voicerag memory message."""
    return isinstance(content, str) and content.startswith(MEMORY_HEADER)


_log = logging.getLogger("voicerag")

T = TypeVar("T")


async def within(awaitable: Awaitable[T], timeout_s: float) -> T:
    """``await awaitable``, raising :class:`asyncio.TimeoutError` past ``timeout_s`` (cancelling it).

    ``asyncio.wait_for`` does the same, but (before Python 3.12) through a future of its own
    completed by a callback: one more event-loop iteration on every turn. Here a timer cancels
    the awaited future itself; voicerag's awaitables are futures already (nothing is wrapped)."""
    future = asyncio.ensure_future(awaitable)
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        future.cancel()

    timer = asyncio.get_running_loop().call_later(timeout_s, expire)
    try:
        return await future
    except asyncio.CancelledError:
        if expired:
            raise asyncio.TimeoutError from None
        raise
    finally:
        timer.cancel()


def watch(outcome: Any, what: str) -> None:
    """Logs the failure of a call whose outcome arrives later (``BusClient.reply`` returns an
    awaitable for the memory stream's ack; ``Pipeline.reply`` returns ``None``)."""
    if not asyncio.isfuture(outcome):
        return

    def done(future: asyncio.Future) -> None:
        if not future.cancelled() and future.exception() is not None:
            _log.warning("voicerag: %s failed: %s", what, future.exception())

    outcome.add_done_callback(done)


class ConversationTurns:
    """One conversation's ids and turn state, shared by the framework integrations: whose
    memories (namespace), which conversation, the current utterance and the last recall."""

    def __init__(
        self,
        source: Any,
        *,
        namespace: str,
        conversation: str,
        speaker: str = "user",
        timeout_s: float = 1.0,
        on_context: Callable[[ContextResult], Any] | None = None,
    ) -> None:
        """
        Args:
            source: a started :class:`voicerag.Pipeline` or a connected :class:`voicerag.BusClient`.
            namespace: whose memories these are (the user id); never shared between users.
            conversation: this session's id (memory ids are ``<conversation>/<utterance>``).
            speaker: the speaker name stored with the user's finals.
            timeout_s: a guard only: voicerag answers by its own deadline; past this the turn goes
                on without memories (a dead bus, say) and a warning is logged.
            on_context: called with each final's :class:`ContextResult` (metrics, logging).
        """
        if not namespace or not conversation:
            raise ValueError(f"{type(self).__name__} needs a non-empty namespace and conversation")
        self.source = source
        self.namespace = namespace
        self.conversation = conversation
        self.speaker = speaker
        self.timeout_s = timeout_s
        self.on_context = on_context
        self._turn = 1
        self._last_final_utterance: str | None = None
        self._replies_this_turn = 0
        self.last_result: ContextResult | None = None

    @property
    def utterance(self) -> str:
        """The id of the utterance being transcribed."""
        return f"u{self._turn}"

    def _transcript(self, text: str, is_final: bool) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "conversation": self.conversation,
            "utterance": self.utterance,
            "speaker": self.speaker,
            "text": text,
            "is_final": is_final,
        }
