"""The integrations' guard timeout (`voicerag.memories.within`): a result in time is returned, a
late one is given up on (the awaited future cancelled, TimeoutError), and cancelling the caller is
a cancellation, never mistaken for a timeout."""

from __future__ import annotations

import asyncio

import pytest

from voicerag import _native
from voicerag.memories import within


def test_a_result_in_time_is_returned():
    async def run():
        assert await within(_native._bench_roundtrip(), 30) is None
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        loop.call_soon(ready.set_result, "recalled")
        assert await within(ready, 30) == "recalled"

    asyncio.run(run())


def test_a_late_result_times_out_and_is_cancelled():
    async def run():
        never = asyncio.get_running_loop().create_future()
        with pytest.raises(asyncio.TimeoutError):
            await within(never, 0.05)
        assert never.cancelled()

    asyncio.run(run())


def test_cancelling_the_caller_is_not_a_timeout():
    async def run():
        never = asyncio.get_running_loop().create_future()
        waiting = asyncio.create_task(within(never, 30))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert never.cancelled()

    asyncio.run(run())
