"""The hand-off of Rust results to asyncio: every awaiting caller gets its result, on its own
loop, however many finish at once; cancelled awaits are left alone; a loop that cannot watch a
socket still gets its results (call_soon_threadsafe). No models needed."""

from __future__ import annotations

import asyncio
import threading

from voicerag import _native


def test_many_results_finishing_together_all_arrive():
    async def run():
        results = await asyncio.wait_for(asyncio.gather(*(_native._bench_roundtrip() for _ in range(500))), 60)
        assert results == [None] * 500

    asyncio.run(run())


def on_three_loops(run) -> dict[str, object]:
    """Runs ``run()`` on three event loops at once, each in a thread of its own: what each
    returned (or raised), by loop name."""
    outcomes: dict[str, object] = {}

    def in_thread(name: str) -> None:
        try:
            outcomes[name] = asyncio.run(run())
        except BaseException as e:  # reported by the caller, in the test's thread
            outcomes[name] = e

    threads = [threading.Thread(target=in_thread, args=(f"loop{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return outcomes


def test_each_event_loop_gets_its_own_results():
    async def run():
        for _ in range(20):
            await asyncio.wait_for(asyncio.gather(*(_native._bench_roundtrip() for _ in range(20))), 60)
        return "done"

    assert on_three_loops(run) == {f"loop{i}": "done" for i in range(3)}
    # A new loop on a thread whose previous loop is closed works too.
    assert asyncio.run(run()) == "done"


def test_a_cancelled_await_is_left_alone():
    async def run():
        errors: list[dict] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        cancelled = _native._bench_roundtrip()
        cancelled.cancel()
        # Results are handed over in order of completion; later ones arriving proves the
        # cancelled one was handed over (and skipped) too.
        await asyncio.wait_for(asyncio.gather(*(_native._bench_roundtrip() for _ in range(50))), 60)
        await asyncio.sleep(0)
        assert cancelled.cancelled()
        assert errors == []

    asyncio.run(run())


class NoReaderLoop(asyncio.SelectorEventLoop):
    """A loop that cannot watch file descriptors (as some third-party loops)."""

    def add_reader(self, *args, **kwargs):
        raise NotImplementedError


def test_a_loop_that_cannot_watch_a_socket_still_gets_its_results():
    async def many():
        return await asyncio.wait_for(asyncio.gather(*(_native._bench_roundtrip() for _ in range(50))), 60)

    async def one():
        return await _native._bench_roundtrip()

    loop = NoReaderLoop()
    try:
        assert loop.run_until_complete(many()) == [None] * 50
        assert not hasattr(loop, "_voicerag_inbox")  # served by the fallback
    finally:
        loop.close()
    normal = asyncio.new_event_loop()
    try:
        normal.run_until_complete(one())
        assert hasattr(normal, "_voicerag_inbox")
    finally:
        normal.close()


# Futures the loop polls itself (query, context): the first step runs inside the call, later
# steps on the loop's thread each time the future is woken.


def test_a_loop_polled_future_ready_at_once_is_done_before_it_is_awaited():
    async def run():
        future = _native._loop_polled_for_tests(7)
        assert future.done()  # completed in the call: no thread hand-over at all
        assert await future == 7

    asyncio.run(run())


def test_loop_polled_futures_that_wait_are_woken_and_all_arrive():
    async def run():
        futures = [_native._loop_polled_for_tests(i, 1 + i % 5) for i in range(300)]
        assert not any(f.done() for f in futures)
        assert await asyncio.wait_for(asyncio.gather(*futures), 60) == list(range(300))

    asyncio.run(run())


def test_a_loop_polled_future_on_other_loops_and_the_fallback_loop():
    async def run():
        return await asyncio.wait_for(
            asyncio.gather(*(_native._loop_polled_for_tests(i, 2) for i in range(20))), 60
        )

    assert on_three_loops(run) == {f"loop{i}": list(range(20)) for i in range(3)}

    async def one():
        return await _native._loop_polled_for_tests(5, 2)

    loop = NoReaderLoop()  # no inbox: served by a tokio task and call_soon_threadsafe
    try:
        assert loop.run_until_complete(one()) == 5
        assert not hasattr(loop, "_voicerag_inbox")
    finally:
        loop.close()


def test_a_cancelled_loop_polled_await_is_left_alone():
    async def run():
        errors: list[dict] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        cancelled = _native._loop_polled_for_tests(1, 5)
        cancelled.cancel()
        # Woken later than the cancelled one: by then it was polled to the end and skipped.
        assert await asyncio.wait_for(_native._loop_polled_for_tests(2, 50), 60) == 2
        assert cancelled.cancelled()
        assert errors == []

    asyncio.run(run())


def test_a_loop_polled_call_outside_a_running_loop_raises():
    import pytest

    with pytest.raises(RuntimeError, match="running asyncio event loop"):
        _native._loop_polled_for_tests(1)
    loop = asyncio.new_event_loop()
    loop.close()
    asyncio.set_event_loop(loop)
    try:
        with pytest.raises(RuntimeError, match="running asyncio event loop"):
            _native._loop_polled_for_tests(1)
    finally:
        asyncio.set_event_loop(None)
