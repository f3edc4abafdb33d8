"""The console socket's JSON text frames, both ways.

Browser to server, one object per action::

    {"id": 7, "action": "say", "text": "One moment please."}
    {"id": 8, "action": "interrupt"}
    {"id": 9, "action": "hang_up"}
    {"id": 10, "action": "transfer", "to": "+14155551234"}

Server to browser, each with a ``type``:

* ``snapshot``: ``call`` (the record, its streams), ``events`` (the latest
  event-log rows, oldest first), ``can_act``, ``server_time`` (epoch ms);
  the first message of every connection, so a reconnect starts from it;
* ``event``: one stream event, ``{"id", "event", "stream_sid", "data", "at"}``
  (``id`` is the event-log row's, None for a live event; ``at`` epoch ms);
* ``call``: the record again, when its status or streams changed;
* ``reply``: ``{"id", "ok": true, "result": {...}}`` or ``{"id", "ok": false,
  "error": "..."}`` for each request (``id`` None when the request had none).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["ACTIONS", "BadRequest", "Request", "parse_request", "reply_ok", "reply_error", "event_message"]

ACTIONS = ("say", "interrupt", "hang_up", "transfer")


class BadRequest(ValueError):
    """A frame that is not a request this console understands; ``request_id`` when it had one."""

    def __init__(self, message: str, request_id: int | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


@dataclass(frozen=True, slots=True)
class Request:
    id: int | None
    action: str
    text: str = ""
    to: str = ""


def parse_request(text: str) -> Request:
    """The request ``text`` carries; :class:`BadRequest` says what is wrong with it."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise BadRequest("Not JSON: send one JSON object per message") from None
    if not isinstance(value, dict):
        raise BadRequest("Not a JSON object: send {\"id\": N, \"action\": ...}")
    request_id = value.get("id")
    if request_id is not None and (isinstance(request_id, bool) or not isinstance(request_id, int)):
        raise BadRequest("\"id\" must be an integer")
    action = value.get("action")
    if action not in ACTIONS:
        raise BadRequest(f"Unknown action: use one of {', '.join(ACTIONS)}", request_id)
    fields = {}
    for name in ("text", "to"):
        field_value = value.get(name, "")
        if not isinstance(field_value, str):
            raise BadRequest(f"\"{name}\" must be a string", request_id)
        fields[name] = field_value
    return Request(id=request_id, action=action, **fields)


def reply_ok(request_id: int | None, result: dict[str, Any]) -> dict[str, Any]:
    return {"type": "reply", "id": request_id, "ok": True, "result": result}


def reply_error(request_id: int | None, error: str) -> dict[str, Any]:
    return {"type": "reply", "id": request_id, "ok": False, "error": error}


def event_message(event: dict[str, Any]) -> dict[str, Any]:
    return {"type": "event", "event": event}
