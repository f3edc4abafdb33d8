"""The consumer's receive loop: one message at a time, in order, errors propagate."""

import asyncio

import pytest

from mediastream.dispatch import DispatchLoop, dispatch_loop

pytestmark = pytest.mark.asyncio


async def settle(condition, turns: int = 1000) -> None:
    """Let the loop run until ``condition()`` holds; fail after ``turns`` turns."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


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


async def test_an_offered_message_is_handled_at_once_when_nothing_else_is():
    handled = []

    async def dispatch(message):
        handled.append(("queued", message))

    def dispatch_now(message):
        handled.append(("now", message))

    loop = DispatchLoop(dispatch, dispatch_now)
    queue = asyncio.Queue()
    runner = asyncio.create_task(loop.run([queue.get]))
    await asyncio.sleep(0)
    assert loop.offer("f1") is True
    assert handled == [("now", "f1")], "handled in the offer call itself"
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner


async def test_an_offer_waits_its_turn_behind_a_message_being_handled():
    """While a queued message is being handled (or one waits for its turn) an offer is refused: the caller queues it."""
    release = asyncio.Event()
    handled = []

    async def dispatch(message):
        handled.append(message)
        if message == "slow":
            await release.wait()

    loop = DispatchLoop(dispatch, lambda message: handled.append(message))
    queue = asyncio.Queue()
    runner = asyncio.create_task(loop.run([queue.get]))
    queue.put_nowait("slow")
    await settle(lambda: handled == ["slow"])
    assert loop.offer("f1") is False  # the caller queues it instead: after "slow"
    queue.put_nowait("f1")
    release.set()
    await settle(lambda: handled == ["slow", "f1"])
    assert loop.offer("f2") is True
    assert handled == ["slow", "f1", "f2"]
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)


async def test_what_an_offered_message_must_await_holds_the_turn_until_done():
    release = asyncio.Event()
    order = []

    async def finish():
        await release.wait()
        order.append("f1 finished")

    def dispatch_now(message):
        order.append(message)
        return finish() if message == "f1" else None

    async def dispatch(message):
        order.append(message)

    loop = DispatchLoop(dispatch, dispatch_now)
    queue = asyncio.Queue()
    runner = asyncio.create_task(loop.run([queue.get]))
    await asyncio.sleep(0)
    assert loop.offer("f1") is True
    assert loop.offer("f2") is False  # f1 is not finished: the next frame queues behind it
    queue.put_nowait("f2")
    for _ in range(5):
        await asyncio.sleep(0)
    assert order == ["f1"], "f2 was handled before f1 finished"
    release.set()
    await settle(lambda: order == ["f1", "f1 finished", "f2"])
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)


async def test_a_failing_offered_message_ends_the_loop_with_its_exception():
    def dispatch_now(message):
        raise ValueError("bad frame handler")

    async def dispatch(message):
        raise AssertionError("nothing queued")

    loop = DispatchLoop(dispatch, dispatch_now)
    runner = asyncio.create_task(loop.run([asyncio.Queue().get]))
    await asyncio.sleep(0)
    assert loop.offer("f1") is True  # never raises into the server's frame reader
    with pytest.raises(ValueError, match="bad frame handler"):
        await asyncio.wait_for(runner, 2)
    assert loop.offer("f2") is False


@pytest.mark.parametrize("path", ["offered", "queued"])
async def test_a_handler_s_own_cancellation_ends_the_loop_on_either_path(path):
    async def cancelled_by_itself():
        future = asyncio.get_running_loop().create_future()
        future.cancel()
        await future

    async def dispatch(message):
        await cancelled_by_itself()

    loop = DispatchLoop(dispatch, lambda message: cancelled_by_itself())
    queue = asyncio.Queue()
    runner = asyncio.create_task(loop.run([queue.get]))
    await asyncio.sleep(0)
    if path == "offered":
        assert loop.offer("f1") is True
    else:
        queue.put_nowait("m1")
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(runner, 2)
