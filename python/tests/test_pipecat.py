"""voicerag's Pipecat processors in a real Pipecat pipeline (PipelineWorker, the current name of
PipelineTask, run by WorkerRunner): two users' agents on one voicerag pipeline."""

from __future__ import annotations

import asyncio

from pipecat.workers.runner import WorkerRunner

import voicerag
from conftest import overrides, wait_until
from pipecat_support import AgentUnderTest
from voicerag.memories import is_memory_message

ALICE = [("a1", "my dog Rex loves running on the beach"), ("a2", "my sister Ana lives in Porto")]
BOB = [("b1", "my dog Bruno is afraid of the beach"), ("b2", "I work night shifts at the hospital")]


def memory_messages(messages: list[dict]) -> list[str]:
    return [m["content"] for m in messages if is_memory_message(m.get("content"))]


def test_two_users_get_their_own_memories_on_time_with_interims_speculating(data_dir):
    async def run():
        pipeline = await voicerag.Pipeline.start(**overrides(data_dir, pipeline__emit_partials=True))
        for ns, memories in (("alice", ALICE), ("bob", BOB)):
            for mid, text in memories:
                await pipeline.remember(text, namespace=ns, id=mid, conversation="c0")
        results = pipeline.results()
        seen: list[voicerag.ContextResult] = []

        async def collect():
            async for r in results:
                seen.append(r)

        collector = asyncio.create_task(collect())
        alice = AgentUnderTest(pipeline, "alice", "call-a")
        bob = AgentUnderTest(pipeline, "bob", "call-b")
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(alice.worker, bob.worker)
        running = asyncio.create_task(runner.run())
        try:
            def partial_served(ns: str):
                async def wait() -> None:
                    async def served() -> bool:
                        return any(r.namespace == ns and not r.is_final for r in seen)

                    await wait_until(served, f"a partial result for {ns}")

                return wait

            # Turn 1, both users at once, the same question; the final follows the interims once
            # voicerag has served one (as it would while the user is still speaking).
            question = "what does my dog love to do?"
            a1, b1 = await asyncio.gather(
                alice.say(["what does", "what does my dog"], question, partial_served("alice")),
                bob.say(["what does my"], question, partial_served("bob")),
            )
            for messages, mine, theirs in ((a1, ALICE, BOB), (b1, BOB, ALICE)):
                recalled = memory_messages(messages)
                assert len(recalled) == 1, messages
                assert mine[0][1] in recalled[0]
                assert not any(text in recalled[0] for _, text in theirs)
                # The memories sit before the user's message, which the aggregator added last.
                assert messages[-1] == {"role": "user", "content": question}
                assert is_memory_message(messages[-2]["content"])
            for agent in (alice, bob):
                r = agent.memory.last_result
                assert r is not None and r.deadline_met and r.degraded is None
                assert len(agent.user.final_latencies_ms) == 1

            # Interims speculated: partial results of utterance u1 came before its final.
            for ns in ("alice", "bob"):
                kinds = [r.is_final for r in seen if r.namespace == ns and r.utterance == "u1"]
                assert kinds and kinds[0] is False and kinds[-1] is True, (ns, kinds)

            # The turn and the fake LLM's reply became memories, once each, with the turn's ids.
            async def turn_remembered() -> bool:
                q = await pipeline.query(question, namespace="alice", top_k=10)
                r = await pipeline.query("I remember Rex", namespace="alice", top_k=10)
                return "call-a/u1" in [h.id for h in q.hits] and "call-a/u1-reply" in [h.id for h in r.hits]

            await wait_until(turn_remembered, "alice's turn 1 and its reply as memories")
            q = await pipeline.query("I remember Rex", namespace="alice", top_k=10)
            assert [h.id for h in q.hits].count("call-a/u1-reply") == 1
            assert all(not h.id.startswith("call-b/") and h.id not in ("b1", "b2") for h in q.hits)

            # Turn 2: a new recall replaces the previous one in the context.
            a2 = await alice.say([], "where does my sister live?")
            recalled = memory_messages(a2)
            assert len(recalled) == 1 and ALICE[1][1] in recalled[0]
            assert not any(text in recalled[0] for _, text in BOB)
        finally:
            await alice.end()
            await bob.end()
            await asyncio.wait_for(running, 60)
            await pipeline.shutdown()
            await asyncio.wait_for(collector, 60)

    asyncio.run(run())


def test_a_turn_goes_on_without_memories_when_voicerag_fails(data_dir):
    async def run():
        pipeline = await voicerag.Pipeline.start(**overrides(data_dir))
        await pipeline.shutdown()  # every call now raises PipelineClosedError
        agent = AgentUnderTest(pipeline, "alice", "call-x")
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(agent.worker)
        running = asyncio.create_task(runner.run())
        try:
            messages = await agent.say(["where does"], "where does my sister live?")
            # The transcription still reached the LLM: nothing was lost, no memory message added.
            assert messages[-1] == {"role": "user", "content": "where does my sister live?"}
            assert memory_messages(messages) == []
            assert agent.memory.last_result is None
        finally:
            await agent.end()
            await asyncio.wait_for(running, 60)

    asyncio.run(run())


def test_memories_go_straight_into_the_aggregators_context_when_given(data_dir):
    async def run():
        pipeline = await voicerag.Pipeline.start(**overrides(data_dir))
        for ns, memories in (("alice", ALICE), ("bob", BOB)):
            for mid, text in memories:
                await pipeline.remember(text, namespace=ns, id=mid, conversation="c0")
        alice = AgentUnderTest(pipeline, "alice", "call-d", direct_context=True)
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(alice.worker)
        running = asyncio.create_task(runner.run())
        try:
            question = "what does my dog love to do?"
            m1 = await alice.say(["what does my dog"], question)
            recalled = memory_messages(m1)
            assert len(recalled) == 1 and ALICE[0][1] in recalled[0], m1
            assert not any(text in recalled[0] for _, text in BOB)
            assert m1[-1] == {"role": "user", "content": question}
            assert is_memory_message(m1[-2]["content"])
            # Turn 2: the new recall replaces the previous one in the same context object.
            m2 = await alice.say([], "where does my sister live?")
            recalled = memory_messages(m2)
            assert len(recalled) == 1 and ALICE[1][1] in recalled[0], m2
            assert memory_messages(alice.context.get_messages()) == recalled
        finally:
            await alice.end()
            await asyncio.wait_for(running, 60)
            await pipeline.shutdown()

    asyncio.run(run())


def test_a_context_that_is_not_an_llm_context_is_refused():
    import pytest

    from voicerag.pipecat import VoiceragMemory

    memory = VoiceragMemory(object(), namespace="alice", conversation="c1")
    with pytest.raises(TypeError, match="LLMContext"):
        memory.user(context=[{"role": "system", "content": "hi"}])
