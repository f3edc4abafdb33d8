"""Tools every agent may use: ending the call, and the call-control actions.

Name them in an agent's ``TOOLS``::

    "TOOLS": [
        "mediastream.agents.builtin_tools.end_call",
        "mediastream.agents.builtin_tools.transfer_call",
        "mediastream.agents.builtin_tools.send_to_voicemail",
    ]

``end_call`` only returns the ``{"end_call": true}`` marker: the conversation
engine closes the stream once the goodbye has played. ``transfer_call`` moves
the caller to one of ``MEDIASTREAM["AGENT_TRANSFER_TARGETS"]`` by its label,
never to a number the model makes up (a caller could talk a model into
dialling anywhere). Both call-control tools go through ``voicecall.control``.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..conf import app_settings
from .base import CallContext
from .tools import ToolError

__all__ = ["end_call", "transfer_call", "send_to_voicemail"]


def end_call() -> dict[str, bool]:
    """End the phone call. Say goodbye first; use it when the caller is finished or asks to hang up."""
    return {"end_call": True}


async def transfer_call(to: str, context: CallContext) -> dict[str, Any]:
    """Transfer the caller to a person or department.

    Args:
        to: The transfer target's label, one of those named in your instructions (e.g. "sales").
    """
    targets = app_settings.AGENT_TRANSFER_TARGETS or {}
    destination = targets.get(to)
    if not destination:
        known = ", ".join(sorted(targets)) or "none are configured"
        raise ToolError(f"unknown transfer target {to!r} (targets: {known})")
    await _control().atransfer(context.call_sid, destination)
    return {"transferred": True, "to": to}


async def send_to_voicemail(context: CallContext) -> dict[str, bool]:
    """Send the caller to voicemail so they can leave a message."""
    await _control().asend_to_voicemail(context.call_sid)
    return {"voicemail": True}


def _control() -> Any:
    try:
        return importlib.import_module("voicecall.control")
    except ImportError:
        raise ToolError("call control is not available in this installation") from None
