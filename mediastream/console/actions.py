"""What each console control does, through the public APIs only.

``say`` and ``interrupt`` go through :mod:`mediastream.api` (the channel layer
reaches the consumer holding the call in any process); ``hang_up`` and
``transfer`` through :mod:`voicecall.control` (Twilio's REST API), with the
destination checked by the admin's own transfer form. Each returns the result
to show, or raises :class:`ActionFailed` with the sentence to show instead.
"""

from __future__ import annotations

import logging
from typing import Any

from voicecall.control import CallControlError, ahang_up, atransfer
from voicecall.logsafe import sanitize

from ..api import ainterrupt, aspeak
from .conf import ConsoleSettings
from .wire import Request

__all__ = ["ActionFailed", "perform"]

logger = logging.getLogger(__name__)


class ActionFailed(Exception):
    """The action was not carried out; the message says why and what to do."""


async def perform(request: Request, call_sid: str, settings: ConsoleSettings, who: str) -> dict[str, Any]:
    """Carry out ``request`` on the call; its result, or :class:`ActionFailed`."""
    logger.info("Console: %s asked to %s on %s", sanitize(who, 60), request.action, sanitize(call_sid, 40))
    if request.action == "say":
        return await _say(request.text, call_sid, settings)
    if request.action == "interrupt":
        count = await ainterrupt(call_sid, "console", wait=True)
        return {"count": count or 0, "live": count is not None}
    if request.action == "hang_up":
        return {"status": await _control(ahang_up(call_sid))}
    if request.action == "transfer":
        from voicecall.admin_twilio import TransferForm  # the admin's own check of a destination

        form = TransferForm({"to": request.to})
        if not form.is_valid():
            raise ActionFailed(" ".join(str(error) for error in form.errors.get("to", ["Not a destination."])))
        return {"status": await _control(atransfer(call_sid, form.cleaned_data["to"])), "to": form.cleaned_data["to"]}
    raise ActionFailed(f"Unknown action {request.action!r}")


async def _say(text: str, call_sid: str, settings: ConsoleSettings) -> dict[str, Any]:
    text = text.strip()
    if not text:
        raise ActionFailed("Type what to say first.")
    if len(text) > settings.max_say_chars:
        raise ActionFailed(f"That is {len(text)} characters; at most {settings.max_say_chars} can be said at once.")
    result = await aspeak(call_sid, text, wait=True, timeout=settings.say_timeout_seconds)
    return result.as_dict()


async def _control(operation) -> str:
    try:
        return await operation
    except CallControlError as exc:
        raise ActionFailed(f"{exc}. {exc.hint}") from exc
