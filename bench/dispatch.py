"""What-if for the per-frame path: a cheaper ``await_many_dispatch`` (bench experiment only).

Channels' ``await_many_dispatch`` handles every message by creating a new Task
for the source it came from and calling ``asyncio.wait`` over all sources (a
fresh future, a done-callback on each pending task, a set, ...). For 50
frames/s per stream that machinery costs more CPU than the consumer's own
handler (see the README's profile).

``pump_await_many_dispatch`` keeps the same contract - messages from any
source are dispatched one at a time, in arrival order, each source has at
most one message in flight, a source's exception propagates - with one
long-lived pump task per source feeding a small queue. With
``BENCH_DISPATCH=pump`` in daphne's environment, ``bench.asgi`` installs it
in place of channels' function (for every consumer in the process).
"""

from __future__ import annotations

import asyncio


class _Failed:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


async def _pump(source, queue: asyncio.Queue) -> None:
    try:
        while True:
            message = await source()
            await queue.put(message)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # noqa: BLE001 - handed to the dispatching task
        await queue.put(_Failed(exc))


async def pump_await_many_dispatch(consumer_callables, dispatch):
    queue: asyncio.Queue = asyncio.Queue(maxsize=1)
    tasks = [asyncio.create_task(_pump(source, queue)) for source in consumer_callables]
    try:
        while True:
            message = await queue.get()
            if type(message) is _Failed:
                raise message.exc
            await dispatch(message)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def install() -> None:
    import channels.consumer

    channels.consumer.await_many_dispatch = pump_await_many_dispatch
