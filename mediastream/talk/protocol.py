"""The relay's wire protocol: JSON text frames in, typed requests out; replies and events as dicts. No I/O.

Client to server: ``{"id": N, "method": M, "params": {...}}`` with M one of
``create``, ``audio``, ``toolResult``, ``cancel``, ``stop``. Each request is
answered with ``{"id": N, "result": {...}}`` or ``{"id": N, "error":
{"message": "..."}}``. Server to client: ``{"event": "talk.event", "payload":
{"relaySessionId": ..., "type": T, ...}}`` (:func:`event`).

The limit and lookup errors carry exactly the messages clients match on
(:data:`TOO_MANY_SESSIONS` and the rest).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "AudioParams",
    "CancelParams",
    "CreateParams",
    "EVENT",
    "FRAME_TOO_LARGE",
    "RelayError",
    "Request",
    "StopParams",
    "TOO_MANY_SESSIONS",
    "TOO_MANY_SESSIONS_FOR_CONNECTION",
    "ToolResultParams",
    "UNKNOWN_SESSION",
    "UNKNOWN_TOOL_CALL",
    "error",
    "event",
    "parse_params",
    "parse_request",
    "result",
]

EVENT = "talk.event"
TOO_MANY_SESSIONS = "Too many active realtime relay sessions"
TOO_MANY_SESSIONS_FOR_CONNECTION = "Too many active realtime relay sessions for this connection"
FRAME_TOO_LARGE = "Realtime relay audio frame is too large"
UNKNOWN_SESSION = "Unknown realtime relay session"
UNKNOWN_TOOL_CALL = "Unknown realtime relay tool call"

METHODS = ("create", "audio", "toolResult", "cancel", "stop")
#: A tool result is handed to the model as JSON text of at most this many characters.
MAX_TOOL_RESULT_CHARS = 64 * 1024
MAX_INSTRUCTIONS_CHARS = 16_000
MAX_ID_CHARS = 128
MAX_REASON_CHARS = 200
#: Voice and model names: what vendors use (``gpt-realtime``, ``alloy``, ``gpt-4o-realtime-preview-2025-06-03``).
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")

RequestId = int | str | None
CloseReason = Literal["completed", "error"]


class RelayError(Exception):
    """A request the relay refuses; ``message`` is what the client reads."""

    def __init__(self, message: str, request_id: RequestId = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True, slots=True)
class Request:
    id: RequestId
    method: str
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CreateParams:
    instructions: str | None = None
    voice: str | None = None
    model: str | None = None


@dataclass(frozen=True, slots=True)
class AudioParams:
    relay_session_id: str
    #: PCM16 mono 24 kHz, little-endian.
    pcm: bytes
    timestamp: float | None = None


@dataclass(frozen=True, slots=True)
class ToolResultParams:
    relay_session_id: str
    call_id: str
    result: Any
    will_continue: bool = False


@dataclass(frozen=True, slots=True)
class CancelParams:
    relay_session_id: str
    reason: str = "client-cancelled"


@dataclass(frozen=True, slots=True)
class StopParams:
    relay_session_id: str


Params = CreateParams | AudioParams | ToolResultParams | CancelParams | StopParams


# --- in ------------------------------------------------------------------------------------------


def parse_request(text: str) -> Request:
    """One text frame as a request; :class:`RelayError` (with the id when it was readable) if it is not one."""
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError):
        raise RelayError("A relay request must be a JSON object") from None
    if not isinstance(frame, dict):
        raise RelayError("A relay request must be a JSON object")
    request_id = frame.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, (int, str)) or (
        isinstance(request_id, str) and len(request_id) > MAX_ID_CHARS
    ):
        raise RelayError("A relay request needs an id: a number or a short string")
    method = frame.get("method")
    if method not in METHODS:
        raise RelayError(f"Unknown relay method; use one of {', '.join(METHODS)}", request_id)
    params = frame.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise RelayError("params must be a JSON object", request_id)
    return Request(request_id, method, params)


def parse_params(request: Request, *, max_audio_base64: int) -> Params:
    """The request's params, checked; the audio frame limit is checked before anything else about it."""
    p = request.params
    rid = request.id
    if request.method == "create":
        instructions = _optional_str(p, "instructions", rid, MAX_INSTRUCTIONS_CHARS)
        return CreateParams(instructions, _optional_name(p, "voice", rid), _optional_name(p, "model", rid))
    if request.method == "audio":
        audio = p.get("audioBase64")
        if not isinstance(audio, str):
            raise RelayError("audioBase64 must be a string", rid)
        if len(audio) > max_audio_base64:
            raise RelayError(FRAME_TOO_LARGE, rid)
        session_id = _session_id(p, rid)
        try:
            pcm = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise RelayError("audioBase64 is not valid base64", rid) from None
        if len(pcm) % 2:
            raise RelayError("audioBase64 must hold whole PCM16 samples (an even number of bytes)", rid)
        timestamp = p.get("timestamp")
        if timestamp is not None and (
            isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)) or not math.isfinite(timestamp)
        ):
            raise RelayError("timestamp must be a finite number", rid)
        return AudioParams(session_id, pcm, None if timestamp is None else float(timestamp))
    if request.method == "toolResult":
        session_id = _session_id(p, rid)
        call_id = p.get("callId")
        if not isinstance(call_id, str) or not call_id or len(call_id) > MAX_ID_CHARS:
            raise RelayError("callId must be the toolCall's callId", rid)
        if "result" not in p:
            raise RelayError("toolResult needs a result", rid)
        if len(json.dumps(p["result"], ensure_ascii=False)) > MAX_TOOL_RESULT_CHARS:
            raise RelayError(f"A tool result may be at most {MAX_TOOL_RESULT_CHARS} characters of JSON", rid)
        will_continue = p.get("willContinue", False)
        if not isinstance(will_continue, bool):
            raise RelayError("willContinue must be true or false", rid)
        return ToolResultParams(session_id, call_id, p["result"], will_continue)
    if request.method == "cancel":
        session_id = _session_id(p, rid)
        reason = _optional_str(p, "reason", rid, MAX_REASON_CHARS)
        return CancelParams(session_id, reason or "client-cancelled")
    return StopParams(_session_id(p, rid))


def _session_id(params: dict[str, Any], rid: RequestId) -> str:
    value = params.get("relaySessionId")
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        raise RelayError("relaySessionId must be the id create returned", rid)
    return value


def _optional_str(params: dict[str, Any], key: str, rid: RequestId, limit: int) -> str | None:
    value = params.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise RelayError(f"{key} must be a string of at most {limit} characters", rid)
    return value


def _optional_name(params: dict[str, Any], key: str, rid: RequestId) -> str | None:
    value = params.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not _NAME.match(value):
        raise RelayError(f"{key} must be a name of letters, digits and . _ : - (at most 64)", rid)
    return value


# --- out -----------------------------------------------------------------------------------------


def result(request_id: RequestId, value: dict[str, Any]) -> dict[str, Any]:
    return {"id": request_id, "result": value}


def error(request_id: RequestId, message: str) -> dict[str, Any]:
    return {"id": request_id, "error": {"message": message}}


def event(relay_session_id: str, type: str, **fields: Any) -> dict[str, Any]:
    """A ``talk.event`` frame for the session's owner."""
    return {"event": EVENT, "payload": {"relaySessionId": relay_session_id, "type": type, **fields}}
