"""A cheaper consumer receive loop for high message rates.

Channels' ``await_many_dispatch`` makes a new task per message and an
``asyncio.wait`` over all sources; at 50 media frames a second per call that
machinery costs more than the consumer's own handler, and at ~300 streams per
process it pushes the p99 frame lag past 20 ms (see bench/README.md).
:func:`dispatch_loop` keeps the same contract (one message handled at a time,
in arrival order across sources; a source's exception propagates) with one
long-lived reader task per source feeding a small queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

__all__ = ["dispatch_loop"]


class _Failed:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


async def _read(source: Callable[[], Awaitable[Any]], queue: asyncio.Queue) -> None:
    try:
        while True:
            await queue.put(await source())
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # handed to the dispatching task, which raises it
        await queue.put(_Failed(exc))


async def dispatch_loop(
    sources: Sequence[Callable[[], Awaitable[Any]]], dispatch: Callable[[Any], Awaitable[None]]
) -> None:
    """Pass messages from every source to ``dispatch``, one at a time, until something raises."""
    queue: asyncio.Queue = asyncio.Queue(maxsize=1)
    readers = [asyncio.create_task(_read(source, queue), name="mediastream-reader") for source in sources]
    try:
        while True:
            message = await queue.get()
            if type(message) is _Failed:
                raise message.exc
            await dispatch(message)
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
