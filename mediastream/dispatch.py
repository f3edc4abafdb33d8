"""A cheaper consumer receive loop for high message rates.

Channels' ``await_many_dispatch`` makes a new task per message and an
``asyncio.wait`` over all sources; at 50 media frames a second per call that
machinery costs more than the consumer's own handler, and at ~300 streams per
process it pushes the p99 frame lag past 20 ms (see bench/README.md).
:class:`DispatchLoop` keeps the same contract (one message handled at a time,
in arrival order across sources; a source's exception propagates, after the
message being handled) with one long-lived reader task per source that handles
its own messages in turn.

:meth:`DispatchLoop.offer` goes one step further for the server's frames: when
nothing is being handled or waiting for its turn, a frame is handled at once by
the caller (daphne's frame reader, :mod:`mediastream.daphne_frames`) without a
queue, a task wake-up or a coroutine, and only what must await (a close, say)
finishes in a task that holds the turn. Everything else queues as before.
An offered frame is handled in the caller's context (daphne's reader), not the
consumer task's: a context variable the consumer sets is not seen there.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

__all__ = ["DispatchLoop", "dispatch_loop"]

Dispatch = Callable[[Any], Awaitable[None]]
#: Handles a message without awaiting; returns what is left to await, or None when done.
DispatchNow = Callable[[Any], Awaitable[None] | None]


class _Turn:
    """One message handled at a time: a lock that a plain function can also take when it is free."""

    __slots__ = ("busy", "_waiters")

    def __init__(self) -> None:
        self.busy = False
        self._waiters: deque[asyncio.Future] = deque()

    def try_take(self) -> bool:
        if self.busy or self._waiters:
            return False
        self.busy = True
        return True

    async def take(self) -> None:
        if self.try_take():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # release() hands the turn over: busy stays True
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed over as we were cancelled: pass it on
                self.release()
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.busy = False


class DispatchLoop:
    """Messages from every source to ``dispatch``, one at a time, until something raises."""

    def __init__(self, dispatch: Dispatch, dispatch_now: DispatchNow | None = None) -> None:
        self.dispatch = dispatch
        self.dispatch_now = dispatch_now
        self.turn = _Turn()
        self.failure: asyncio.Future | None = None
        self._finishing: set[asyncio.Task] = set()

    async def run(self, sources: Sequence[Callable[[], Awaitable[Any]]]) -> None:
        self.failure = asyncio.get_running_loop().create_future()
        readers = [asyncio.create_task(self._read(source), name="mediastream-reader") for source in sources]
        try:
            await self.failure
        finally:
            for task in (*readers, *self._finishing):
                task.cancel()
            await asyncio.gather(*readers, *self._finishing, return_exceptions=True)

    def offer(self, message: Any) -> bool:
        """Handle ``message`` now if it is the next in line; False: the caller queues it instead.

        Never raises: a handler's exception ends the loop as it would from a reader.
        """
        failure, turn = self.failure, self.turn
        if self.dispatch_now is None or failure is None or turn.busy or turn._waiters or failure.done():
            return False
        turn.busy = True  # try_take, inline: once per frame
        try:
            rest = self.dispatch_now(message)
        except BaseException as exc:
            self._fail(exc)
            turn.release()
            return True
        if rest is None:
            turn.release()
        else:  # the turn stays taken until what is left has run
            task = asyncio.ensure_future(self._finish(rest))
            self._finishing.add(task)
            task.add_done_callback(self._finishing.discard)
        return True

    async def _finish(self, rest: Awaitable[None]) -> None:
        try:
            await rest
        except asyncio.CancelledError:
            if not asyncio.current_task().cancelling():  # a handler's own: the loop ends as if cancelled
                self.failure.cancel()
            raise
        except BaseException as exc:
            self._fail(exc)
        finally:
            self.turn.release()

    def _fail(self, exc: BaseException) -> None:
        if not self.failure.done():
            self.failure.set_exception(exc)

    async def _read(self, source: Callable[[], Awaitable[Any]]) -> None:
        failure, turn, dispatch = self.failure, self.turn, self.dispatch
        while True:
            try:
                message = await source()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # handed to run(), after the message being handled
                await turn.take()
                self._fail(exc)
                turn.release()
                return
            await turn.take()
            try:
                if failure.done():  # an earlier message or source failed: nothing more is handled
                    return
                await dispatch(message)
            except asyncio.CancelledError:
                if not asyncio.current_task().cancelling():  # a handler's own: the loop ends as if cancelled
                    failure.cancel()
                raise
            except BaseException as exc:
                self._fail(exc)
                return
            finally:
                turn.release()


async def dispatch_loop(sources: Sequence[Callable[[], Awaitable[Any]]], dispatch: Dispatch) -> None:
    """Pass messages from every source to ``dispatch``, one at a time, until something raises."""
    await DispatchLoop(dispatch).run(sources)
