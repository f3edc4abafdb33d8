"""Client tools of a relay session: the model's call goes to the browser, its ``toolResult`` comes back.

A call is announced with a ``toolCall`` event and waits (within the agent's
``TOOL_TIMEOUT``, which :class:`~mediastream.agents.tools.ToolBox` applies)
for the browser's final ``toolResult``. A result sent with ``willContinue:
true`` is progress: it is acknowledged but the call keeps waiting. A result
for a call that is not waiting (never made, answered, timed out, or of a
reply that was cut off) is refused with :data:`~.protocol.UNKNOWN_TOOL_CALL`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..agents.base import CallContext, ToolCall
from .protocol import UNKNOWN_TOOL_CALL, RelayError

__all__ = ["ClientTools"]


class ClientTools:
    def __init__(self, announce: Callable[[str, ToolCall], None]) -> None:
        """``announce(item_id, call)`` sends the ``toolCall`` event."""
        self._announce = announce
        self._waiting: dict[str, asyncio.Future[Any]] = {}

    @property
    def waiting(self) -> list[str]:
        """Call ids waiting for their result."""
        return list(self._waiting)

    async def run(self, call: ToolCall, context: CallContext) -> Any:
        """The ToolBox's client runner: announce ``call``, return the browser's final result."""
        if call.id in self._waiting:
            raise RelayError(f"tool call {call.id} is already waiting for its result")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[call.id] = future
        try:
            self._announce(f"turn-{context.turn_id}", call)
            return await future
        finally:
            if self._waiting.get(call.id) is future:
                del self._waiting[call.id]

    def submit(self, call_id: str, result: Any, *, will_continue: bool) -> None:
        """The browser's result for ``call_id`` (raises :class:`RelayError` if no such call waits)."""
        future = self._waiting.get(call_id)
        if future is None or future.done():
            raise RelayError(UNKNOWN_TOOL_CALL)
        if not will_continue:
            future.set_result(result)

    def cancel_all(self) -> None:
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()
