"""The conversation state both framework integrations share (voicerag.memories.ConversationTurns)."""

import pytest

from voicerag.livekit import VoiceragTurnHook
from voicerag.pipecat import VoiceragMemory


@pytest.mark.parametrize("cls", [VoiceragMemory, VoiceragTurnHook])
def test_an_integration_needs_a_namespace_and_a_conversation(cls):
    for namespace, conversation in [("", "c1"), ("alice", "")]:
        with pytest.raises(ValueError, match=f"{cls.__name__} needs a non-empty namespace"):
            cls(object(), namespace=namespace, conversation=conversation)


@pytest.mark.parametrize("cls", [VoiceragMemory, VoiceragTurnHook])
def test_transcripts_carry_the_users_namespace_and_the_current_utterance(cls):
    turns = cls(object(), namespace="alice", conversation="c1", speaker="ana")
    assert turns.utterance == "u1"
    assert turns._transcript("hello", False) == {
        "namespace": "alice",
        "conversation": "c1",
        "utterance": "u1",
        "speaker": "ana",
        "text": "hello",
        "is_final": False,
    }
