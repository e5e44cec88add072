"""How recalled memories are put in front of a language model: one system message, marked so an
integration can replace the previous turn's recall instead of piling them up."""

from __future__ import annotations

from voicerag._native import ContextResult

#: First line of every memory message voicerag adds to an LLM context.
MEMORY_HEADER = "Relevant memories of this user (recalled by voicerag; may be incomplete):"


def format_memories(result: ContextResult) -> str | None:
    """The memory message's text for ``result``, or ``None`` when nothing was recalled."""
    if not result.hits:
        return None
    lines = [MEMORY_HEADER]
    for hit in result.hits:
        who = "the assistant said" if hit.speaker == "agent" else f"{hit.speaker or 'user'} said"
        lines.append(f"- ({who}) {hit.text}")
    return "\n".join(lines)


def is_memory_message(content: object) -> bool:
    """Whether a message's content is a voicerag memory message."""
    return isinstance(content, str) and content.startswith(MEMORY_HEADER)
