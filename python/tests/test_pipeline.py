"""The Python API of the in-process pipeline, on the real engines."""

from __future__ import annotations

import asyncio
import gc

import pytest

import voicerag
from conftest import overrides, wait_until

ALICE = [
    ("a1", "my dog Rex loves running on the beach"),
    ("a2", "my sister Ana lives in Porto"),
]
BOB = [
    ("b1", "my dog Bruno is afraid of the beach"),
    ("b2", "I work night shifts at the hospital"),
]


async def seeded(data_dir, **extra) -> voicerag.Pipeline:
    pipeline = await voicerag.Pipeline.start(**overrides(data_dir, **extra))
    for ns, memories in (("alice", ALICE), ("bob", BOB)):
        for mid, text in memories:
            await pipeline.remember(text, namespace=ns, id=mid, conversation="c0")
    return pipeline


def final(ns: str, conv: str, utt: str, text: str) -> dict:
    return {"namespace": ns, "conversation": conv, "utterance": utt, "text": text, "is_final": True}


def test_query_recalls_only_the_namespaces_memories(data_dir):
    async def run():
        pipeline = await seeded(data_dir)
        try:
            alice = await pipeline.query("what does my dog love at the beach?", namespace="alice")
            bob = await pipeline.query("what does my dog love at the beach?", namespace="bob")
            assert isinstance(alice, voicerag.ContextResult)
            assert alice.hits and alice.hits[0].id == "a1"
            assert {h.id for h in alice.hits} <= {"a1", "a2"}
            assert bob.hits and {h.id for h in bob.hits} <= {"b1", "b2"}
            assert alice.deadline_met and alice.degraded is None
            d = alice.to_dict()
            assert d["hits"][0]["text"] == ALICE[0][1]
            assert d["timings"]["total_ms"] == pytest.approx(alice.timings.total_ms)
            assert d["rerank"] == "off"
            # Hits become Python objects on first read, once: later reads give the same objects
            # (in a new list), and to_dict() agrees with them field for field.
            first, again = alice.hits, alice.hits
            assert first is not again and all(a is b for a, b in zip(first, again, strict=True))
            first.clear()  # a caller's list is its own
            assert len(alice.hits) == len(again)
            assert d["hits"] == [h.to_dict() for h in alice.hits]
            assert [h["id"] for h in d["hits"]] == [h.id for h in alice.hits]
            one = await pipeline.query("dog beach", namespace="alice", top_k=1)
            assert len(one.hits) == 1
        finally:
            await pipeline.shutdown()

    asyncio.run(run())


def test_a_final_is_recalled_and_remembered_for_the_next_turn(data_dir):
    async def run():
        pipeline = await seeded(data_dir)
        try:
            pipeline.submit({**final("alice", "c1", "u1", "my favourite colour"), "is_final": False})
            r = await pipeline.context(final("alice", "c1", "u1", "my favourite colour is teal"))
            assert (r.namespace, r.conversation, r.utterance, r.is_final) == ("alice", "c1", "u1", True)
            assert all(h.id in {"a1", "a2"} for h in r.hits)

            async def remembered() -> bool:
                q = await pipeline.query("what is my favourite colour?", namespace="alice")
                return any(h.id == "c1/u1" for h in q.hits)

            await wait_until(remembered, "the final c1/u1 to become a memory")
            q = await pipeline.query("what is my favourite colour?", namespace="bob")
            assert all(h.id in {"b1", "b2"} for h in q.hits)
        finally:
            await pipeline.shutdown()

    asyncio.run(run())


def test_results_stream_and_replies_remembered_once(data_dir):
    async def run():
        pipeline = await seeded(data_dir)
        stream = pipeline.results()
        pipeline.submit(final("alice", "c1", "u1", "where does my sister live?"))
        result = await asyncio.wait_for(stream.__anext__(), 30)
        assert result.utterance == "u1" and result.hits[0].id == "a2"
        for _ in range(3):  # the same reply id three times is one memory
            pipeline.reply("Ana lives in Porto, by the river", namespace="alice",
                           conversation="c1", utterance="u1-reply")

        async def replied() -> bool:
            q = await pipeline.query("who lives by the river?", namespace="alice", top_k=10)
            return any(h.id == "c1/u1-reply" for h in q.hits)

        await wait_until(replied, "the reply to become a memory")
        q = await pipeline.query("who lives by the river?", namespace="alice", top_k=10)
        assert [h.speaker for h in q.hits if h.id == "c1/u1-reply"] == ["agent"]
        await pipeline.shutdown()
        rest = [r async for r in stream]  # the stream ends after shutdown
        assert all(r.utterance != "u1" for r in rest)

    asyncio.run(run())


def test_forget(data_dir):
    async def run():
        pipeline = await seeded(data_dir)
        try:
            assert await pipeline.forget(namespace="alice", id="a1") == 1
            q = await pipeline.query("dog beach", namespace="alice", top_k=10)
            assert "a1" not in {h.id for h in q.hits}
            assert await pipeline.forget(namespace="bob") == 2
            q = await pipeline.query("dog beach", namespace="bob")
            assert q.hits == []
            with pytest.raises(TypeError, match="not both"):
                await pipeline.forget(namespace="bob", id="x", conversation="c")
        finally:
            await pipeline.shutdown()

    asyncio.run(run())


def test_bad_input_raises_and_loses_nothing(data_dir):
    async def run():
        pipeline = await seeded(data_dir)
        try:
            with pytest.raises(ValueError, match='missing field "utterance"'):
                pipeline.submit({"namespace": "alice", "conversation": "c1", "text": "hi"})
            with pytest.raises(TypeError, match='"text" must be str, not int'):
                pipeline.submit({**final("alice", "c1", "u1", ""), "text": 42})
            with pytest.raises(TypeError, match='"is_final" must be bool'):
                pipeline.submit({**final("alice", "c1", "u1", "x"), "is_final": "yes"})
            with pytest.raises(TypeError, match="must be a mapping"):
                pipeline.submit(["alice", "c1"])
            with pytest.raises(ValueError, match="namespace is empty"):
                pipeline.submit(final("", "c1", "u1", "hello"))
            with pytest.raises(ValueError, match="context\\(\\) serves a final"):
                await pipeline.context({**final("alice", "c1", "u1", "x"), "is_final": False})
            rejected = pipeline.query("x", namespace="alice", top_k=0)
            assert rejected.done()  # found in the call's first step, on the caller's thread
            with pytest.raises(ValueError, match="top_k"):
                await rejected
            with pytest.raises(ValueError, match="unknown mode"):
                await pipeline.query("x", namespace="alice", mode="fuzzy")
            with pytest.raises(ValueError, match="memory refused"):
                await pipeline.remember("   ", namespace="alice", id="empty")
            with pytest.raises(ValueError, match="memory refused"):
                await pipeline.remember("x" * 100_000, namespace="alice", id="huge")
            # Nothing was lost: the pipeline still answers, with every seeded memory.
            q = await pipeline.query("dog beach sister Porto", namespace="alice", top_k=10)
            assert {h.id for h in q.hits} == {"a1", "a2"}
            assert not pipeline.health()["degraded"]
        finally:
            await pipeline.shutdown()

    asyncio.run(run())


def test_bad_configuration_is_a_config_error(data_dir, tmp_path):
    async def run():
        with pytest.raises(voicerag.ConfigError, match="embedder.model_dir"):
            await voicerag.Pipeline.start(**overrides(data_dir, embedder__model_dir=str(tmp_path / "none")))
        with pytest.raises(voicerag.ConfigError, match="budget_ms"):
            await voicerag.Pipeline.start(**overrides(data_dir, pipeline__budget_ms=0))
        with pytest.raises(TypeError, match="SECTION__KEY"):
            await voicerag.Pipeline.start(**overrides(data_dir), budget_ms=80)
        with pytest.raises(voicerag.ConfigError, match="cannot read config file"):
            await voicerag.Pipeline.start(tmp_path / "missing.toml")

    asyncio.run(run())


def test_calls_in_flight_at_shutdown_end_with_their_result(data_dir):
    async def run():
        pipeline = await seeded(data_dir)
        # Made before shutdown starts, so their first step (polled inside the call) has handed them
        # to the pipeline already: shutdown serves them, none hangs or is lost.
        in_flight = [pipeline.query("dog beach", namespace="alice"),
                     pipeline.context(final("alice", "c1", "u8", "my dog digs at the beach"))]
        ended = await asyncio.wait_for(
            asyncio.gather(*in_flight, pipeline.shutdown(), return_exceptions=True), 60
        )
        assert all(isinstance(r, voicerag.ContextResult) for r in ended[:2]), ended
        assert ended[0].namespace == "alice" and ended[1].utterance == "u8"
        with pytest.raises(voicerag.PipelineClosedError):
            await pipeline.context(final("alice", "c1", "u9", "hello"))

    asyncio.run(run())


def test_the_data_directory_opens_again_as_soon_as_shutdown_returns(data_dir):
    # The last task to let go of the store may still be finishing on a tokio thread when the
    # pipeline's stages have stopped; shutdown() returns only once the store is closed, so a
    # restart in the same process never finds its own data directory locked.
    async def run():
        pipeline = await seeded(data_dir)
        for round_ in range(6):
            in_flight = [pipeline.query("dog beach", namespace="alice") for _ in range(4)]
            in_flight.append(pipeline.context(final("alice", "c1", f"r{round_}", "dog at the beach")))
            ended = await asyncio.gather(*in_flight, pipeline.shutdown(), return_exceptions=True)
            assert all(isinstance(r, voicerag.ContextResult) for r in ended[:-1]), ended
            assert ended[-1] is None, ended[-1]  # shutdown itself succeeded (not timed out)
            pipeline = await voicerag.Pipeline.start(**overrides(data_dir))
            q = await pipeline.query("dog beach sister Porto", namespace="alice", top_k=10)
            assert {"a1", "a2"} <= {h.id for h in q.hits}
        await pipeline.shutdown()

    asyncio.run(run())


def test_used_after_shutdown_or_outside_a_loop(data_dir):
    async def run():
        pipeline = await seeded(data_dir)
        await pipeline.shutdown()
        await pipeline.shutdown()  # idempotent
        assert pipeline.closed
        with pytest.raises(voicerag.PipelineClosedError):
            pipeline.submit(final("alice", "c1", "u9", "hello"))
        with pytest.raises(voicerag.PipelineClosedError):
            await pipeline.query("hello", namespace="alice")
        with pytest.raises(voicerag.PipelineClosedError):
            await pipeline.remember("hello", namespace="alice", id="late")
        with pytest.raises(voicerag.PipelineClosedError):
            pipeline.reply("hi", namespace="alice", conversation="c1", utterance="r")
        # Shutdown released the store: the same data directory opens again in this process,
        # with every memory written before the shutdown.
        again = await voicerag.Pipeline.start(**overrides(data_dir))
        q = await again.query("dog beach sister Porto", namespace="alice", top_k=10)
        assert {h.id for h in q.hits} == {"a1", "a2"}
        return again

    again = asyncio.run(run())
    # Its event loop is closed: a clear error, not a hang or a crash; the pipeline lives on.
    with pytest.raises(RuntimeError, match="running asyncio event loop"):
        again.query("hello", namespace="alice")

    async def later():
        q = await again.query("dog beach", namespace="alice")
        assert q.hits
        await again.shutdown()

    asyncio.run(later())


def test_the_event_loop_keeps_running_while_rust_works(data_dir):
    async def run():
        pipeline = await seeded(data_dir)
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        try:
            before = ticks
            await asyncio.gather(*(pipeline.query(f"dog {i}", namespace="alice") for i in range(20)))
            # The loop ran other work while the queries were served on Rust threads.
            assert ticks > before
        finally:
            task.cancel()
            await pipeline.shutdown()

    asyncio.run(run())


def test_a_rust_panic_is_an_exception_not_an_abort():
    with pytest.raises(voicerag.VoiceragError, match="Rust panic, caught.*synchronous"):
        voicerag._native._panic_for_tests("sync")

    async def run():
        with pytest.raises(voicerag.VoiceragError, match="Rust panic, caught.*future"):
            await voicerag._native._panic_for_tests("async")
        # A future the loop polls itself: a panic in its first step (inside the call) or after a
        # wait (polled from the loop's inbox) is the awaiting caller's exception too.
        with pytest.raises(voicerag.VoiceragError, match="Rust panic, caught.*first step"):
            await voicerag._native._panic_for_tests("inline")
        with pytest.raises(voicerag.VoiceragError, match="Rust panic, caught.*after a wait"):
            await voicerag._native._panic_for_tests("inline-woken")
        assert await voicerag._native._loop_polled_for_tests(3, 1) == 3  # the loop still serves

    asyncio.run(run())
    gc.collect()  # the interpreter is alive and well
