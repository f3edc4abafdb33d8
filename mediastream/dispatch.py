"""A cheaper consumer receive loop for high message rates.

Channels' ``await_many_dispatch`` makes a new task per message and an
``asyncio.wait`` over all sources; at 50 media frames a second per call that
machinery costs more than the consumer's own handler, and at ~300 streams per
process it pushes the p99 frame lag past 20 ms (see bench/README.md).
:func:`dispatch_loop` keeps the same contract (one message handled at a time,
in arrival order across sources; a source's exception propagates, after the
message being handled) with one long-lived reader task per source that handles
its own messages under a lock shared by all readers: a frame costs one task
wake-up, not two with a queue between them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

__all__ = ["dispatch_loop"]


class _Loop:
    """What the readers share: the lock that serialises handling, and the first failure."""

    __slots__ = ("dispatch", "lock", "failure")

    def __init__(self, dispatch: Callable[[Any], Awaitable[None]]) -> None:
        self.dispatch = dispatch
        self.lock = asyncio.Lock()
        self.failure: asyncio.Future = asyncio.get_running_loop().create_future()


async def _read(source: Callable[[], Awaitable[Any]], loop: _Loop) -> None:
    lock, failure, dispatch = loop.lock, loop.failure, loop.dispatch
    while True:
        try:
            message = await source()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to dispatch_loop, after the message being handled
            async with lock:
                if not failure.done():
                    failure.set_exception(exc)
            return
        async with lock:
            if failure.done():  # an earlier message or source failed: nothing more is handled
                return
            try:
                await dispatch(message)
            except asyncio.CancelledError:
                if not asyncio.current_task().cancelling():  # a handler's own: the loop ends as if cancelled
                    failure.cancel()
                raise
            except BaseException as exc:
                failure.set_exception(exc)
                return


async def dispatch_loop(
    sources: Sequence[Callable[[], Awaitable[Any]]], dispatch: Callable[[Any], Awaitable[None]]
) -> None:
    """Pass messages from every source to ``dispatch``, one at a time, until something raises."""
    loop = _Loop(dispatch)
    readers = [asyncio.create_task(_read(source, loop), name="mediastream-reader") for source in sources]
    try:
        await loop.failure
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
