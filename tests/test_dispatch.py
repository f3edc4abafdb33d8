"""The consumer's receive loop: one message at a time, in order, errors propagate."""

import asyncio

import pytest

from mediastream.dispatch import dispatch_loop

pytestmark = pytest.mark.asyncio


async def test_messages_are_handled_one_at_a_time_in_arrival_order():
    a, b = asyncio.Queue(), asyncio.Queue()
    handled, active = [], []

    async def dispatch(message):
        active.append(message)
        assert len(active) == 1, "two messages handled at once"
        await asyncio.sleep(0)
        handled.append(message)
        active.pop()
        if message == "stop":
            raise StopAsyncIteration

    for item in ("a1", "a2"):
        a.put_nowait(item)
    b.put_nowait("b1")
    loop = asyncio.create_task(dispatch_loop([a.get, b.get], dispatch))
    await asyncio.sleep(0.01)
    a.put_nowait("stop")
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(loop, 2)
    assert handled[-1] == "stop"
    assert [m for m in handled if m.startswith("a")] == ["a1", "a2"]
    assert sorted(handled[:-1]) == ["a1", "a2", "b1"]


async def test_a_failing_source_raises_and_readers_are_cancelled():
    async def broken():
        raise ConnectionError("layer down")

    never = asyncio.Queue()

    async def dispatch(message):
        raise AssertionError("nothing to dispatch")

    before = set(asyncio.all_tasks())
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(dispatch_loop([never.get, broken], dispatch), 2)
    await asyncio.sleep(0)
    assert not [t for t in asyncio.all_tasks() - before if not t.done()]
