"""The Twilio Media Streams wire format, sans I/O.

Inbound JSON text becomes dataclasses (frozen, but for the media frame) (numeric strings parsed, base64
decoded once, here); outbound messages are built here and nowhere else. No
asyncio, Channels or Django in this module, so it is tested with plain strings.

:func:`parse_message` raises nothing but :class:`RemoteProtocolError`, whatever
the frame holds: JSON nested too deeply for the parser is malformed like any
other bad JSON. What a ``start`` carries into the database (``tracks``,
``mediaFormat``, ``customParameters``) must be storable as PostgreSQL text and
JSON: no NUL character, no lone surrogate, no NaN or infinity, nesting at most
:data:`MAX_STORED_DEPTH` deep. A start that breaks this is refused as an
:class:`InvalidMessage` rather than cleaned up, since Twilio never sends one (its
frames come from the TwiML's XML, which cannot hold those characters): it is
counted like any bad frame, and the socket closes with 4008 "Start timeout"
unless a valid start follows in time.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = [
    "Connected",
    "Start",
    "Media",
    "Dtmf",
    "Mark",
    "Stop",
    "InboundMessage",
    "RemoteProtocolError",
    "MalformedMessage",
    "UnknownEvent",
    "InvalidMessage",
    "MAX_STORED_DEPTH",
    "parse_message",
    "media_message",
    "mark_message",
    "clear_message",
]


class RemoteProtocolError(ValueError):
    """Twilio (or whoever holds the socket) sent something the protocol does not allow."""

    kind = "invalid"


class MalformedMessage(RemoteProtocolError):
    """The frame is not a JSON object."""

    kind = "malformed"


class UnknownEvent(RemoteProtocolError):
    """A JSON object whose ``event`` is not one Twilio documents."""

    kind = "unknown_event"


class InvalidMessage(RemoteProtocolError):
    """A known event with missing or mistyped fields (including a bad base64 payload)."""

    kind = "invalid"


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str = ""
    version: str = ""


@dataclass(frozen=True, slots=True)
class Start:
    sequence_number: int | None
    stream_sid: str
    call_sid: str
    account_sid: str = ""
    tracks: tuple[str, ...] = ()
    media_format: dict[str, Any] = field(default_factory=dict)
    custom_parameters: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Media:
    """One 20 ms frame of caller audio. Not frozen: built 50 times a second per call, and a frozen
    dataclass's ``__init__`` (``object.__setattr__`` per field) costs four times a plain one's."""

    sequence_number: int | None
    stream_sid: str
    track: str
    chunk: int | None
    timestamp: int | None  # ms since the stream started
    payload: bytes


@dataclass(frozen=True, slots=True)
class Dtmf:
    sequence_number: int | None
    stream_sid: str
    digit: str
    track: str = ""


@dataclass(frozen=True, slots=True)
class Mark:
    sequence_number: int | None
    stream_sid: str
    name: str


@dataclass(frozen=True, slots=True)
class Stop:
    sequence_number: int | None
    stream_sid: str
    call_sid: str = ""
    account_sid: str = ""


InboundMessage = Connected | Start | Media | Dtmf | Mark | Stop


_INTEGER = re.compile(r"-?[0-9]{1,18}")
#: Counters beyond 18 digits (as numbers or strings) are not Twilio's.
_INTEGER_LIMIT = 10**18
#: How deeply ``start.mediaFormat`` may nest (Twilio's is one flat object).
MAX_STORED_DEPTH = 4
# Twilio SIDs are two letters and 32 hex digits; anything beyond letters and digits
# (control characters, NUL, spaces) is refused before it reaches a log or a row.
_SID = re.compile(r"[A-Za-z0-9]{1,64}")
_DIGIT = re.compile(r"[0-9A-Da-dw*#]")


def _int(value: Any, name: str) -> int | None:
    """Twilio sends counters as decimal strings; absent means None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidMessage(f"{name} is not a number")
    if isinstance(value, int):
        if -_INTEGER_LIMIT < value < _INTEGER_LIMIT:
            return value
        raise InvalidMessage(f"{name} is out of range")
    if isinstance(value, str):
        # Twilio's own form first ("123": ASCII digits only), without the regex.
        if value.isdigit() and value.isascii() and len(value) <= 18:
            return int(value)
        if _INTEGER.fullmatch(value.strip()):
            return int(value)
    raise InvalidMessage(f"{name} is not a number")


def _sid(value: Any, name: str, *, required: bool = False) -> str:
    sid = _str(value, name, required=required)
    if sid and not _SID.fullmatch(sid):
        raise InvalidMessage(f"{name} is not a Twilio SID")
    return sid


def _str(value: Any, name: str, *, required: bool = False) -> str:
    if value is None:
        if required:
            raise InvalidMessage(f"missing {name}")
        return ""
    if not isinstance(value, str):
        raise InvalidMessage(f"{name} is not a string")
    if required and not value:
        raise InvalidMessage(f"missing {name}")
    return value


def _storable_text(value: str, name: str) -> str:
    """``value`` if PostgreSQL can store it as text: no NUL, no lone surrogate."""
    if "\x00" in value:
        raise InvalidMessage(f"{name} holds a NUL character")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidMessage(f"{name} holds a lone surrogate") from None
    return value


def _storable_json(value: Any, name: str, depth: int = 0) -> None:
    """Refuse what PostgreSQL JSON cannot hold (see the module docstring); the recursion stops at MAX_STORED_DEPTH."""
    if isinstance(value, str):
        _storable_text(value, name)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidMessage(f"{name} holds a number JSON cannot store")
    elif isinstance(value, (dict, list)):
        if depth >= MAX_STORED_DEPTH:
            raise InvalidMessage(f"{name} is nested too deeply")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str):
                _storable_text(key, name)
            _storable_json(item, name, depth + 1)


def _obj(message: dict[str, Any], key: str) -> dict[str, Any]:
    value = message.get(key)
    if not isinstance(value, dict):
        raise InvalidMessage(f"missing {key} object")
    return value


def _decode_payload(payload: Any) -> bytes:
    if not isinstance(payload, str):
        raise InvalidMessage("media.payload is not a string")
    try:  # Twilio's form: standard alphabet, padded. Strict mode accepts a subset of the general path below.
        return binascii.a2b_base64(payload, strict_mode=True)
    except (binascii.Error, ValueError):
        pass
    # Canonicalise base64url so either alphabet decodes; anything else is invalid.
    payload = payload.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidMessage("media.payload is not valid base64") from None


def _parse_connected(m: dict[str, Any]) -> Connected:
    return Connected(protocol=_str(m.get("protocol"), "protocol"), version=_str(m.get("version"), "version"))


def _parse_start(m: dict[str, Any]) -> Start:
    start = _obj(m, "start")
    params = start.get("customParameters") or {}
    if not isinstance(params, dict):
        raise InvalidMessage("start.customParameters is not an object")
    tracks = start.get("tracks") or []
    if not isinstance(tracks, list):
        raise InvalidMessage("start.tracks is not a list")
    if not all(isinstance(t, str) for t in tracks):
        raise InvalidMessage("start.tracks are not strings")
    _storable_json(tracks, "start.tracks")
    media_format = start.get("mediaFormat") or {}
    if not isinstance(media_format, dict):
        raise InvalidMessage("start.mediaFormat is not an object")
    _storable_json(media_format, "start.mediaFormat")
    return Start(
        sequence_number=_int(m.get("sequenceNumber"), "sequenceNumber"),
        stream_sid=_sid(m.get("streamSid") or start.get("streamSid"), "streamSid", required=True),
        call_sid=_sid(start.get("callSid"), "start.callSid"),
        account_sid=_sid(start.get("accountSid"), "start.accountSid"),
        tracks=tuple(tracks),
        media_format=media_format,
        custom_parameters=_string_map(params, "start.customParameters"),
    )


def _string_map(values: dict[str, Any], name: str) -> dict[str, str]:
    """<Parameter> name/value pairs: storable strings only, as Twilio sends them."""
    if not all(isinstance(v, str) for v in values.values()):
        raise InvalidMessage(f"{name} values must be strings")
    for key, value in values.items():
        _storable_text(key, name)
        _storable_text(value, name)
    return dict(values)


def _twilio_media(m: dict[str, Any]) -> Media | None:
    """A media message in Twilio's own form (decimal strings of 1-18 digits, a string SID and
    track) in one pass, 50 times a second per call; None for any other form."""
    media = m.get("media")
    if type(media) is not dict:
        return None
    seq, chunk, ts = m.get("sequenceNumber"), media.get("chunk"), media.get("timestamp")
    sid, track = m.get("streamSid"), media.get("track")
    if (
        type(seq) is str
        and type(chunk) is str
        and type(ts) is str
        and type(sid) is str
        and type(track) is str
        and 0 < len(seq) <= 18
        and 0 < len(chunk) <= 18
        and 0 < len(ts) <= 18
    ):
        digits = seq + chunk + ts
        if digits.isascii() and digits.isdigit():
            return Media(int(seq), sid, track, int(chunk), int(ts), _decode_payload(media.get("payload")))
    return None


def _parse_media(m: dict[str, Any]) -> Media:
    fast = _twilio_media(m)
    if fast is not None:
        return fast
    media = m.get("media")
    if type(media) is not dict:
        media = _obj(m, "media")
    seq, chunk, ts = m.get("sequenceNumber"), media.get("chunk"), media.get("timestamp")
    sid, track = m.get("streamSid"), media.get("track")
    return Media(
        sequence_number=int(seq) if type(seq) is str and _is_counter(seq) else _int(seq, "sequenceNumber"),
        stream_sid=sid if type(sid) is str else _str(sid, "streamSid"),
        track=track if type(track) is str else _str(track, "media.track"),
        chunk=int(chunk) if type(chunk) is str and _is_counter(chunk) else _int(chunk, "media.chunk"),
        timestamp=int(ts) if type(ts) is str and _is_counter(ts) else _int(ts, "media.timestamp"),
        payload=_decode_payload(media.get("payload")),
    )


def _is_counter(value: str) -> bool:
    """Twilio's form of a counter: 1 to 18 ASCII digits."""
    return len(value) <= 18 and value.isascii() and value.isdigit()


def _parse_dtmf(m: dict[str, Any]) -> Dtmf:
    dtmf = _obj(m, "dtmf")
    return Dtmf(
        sequence_number=_int(m.get("sequenceNumber"), "sequenceNumber"),
        stream_sid=_str(m.get("streamSid"), "streamSid"),
        digit=_digit(dtmf.get("digit")),
        track=_str(dtmf.get("track"), "dtmf.track"),
    )


def _digit(value: Any) -> str:
    digit = _str(value, "dtmf.digit", required=True)
    if not _DIGIT.fullmatch(digit):
        raise InvalidMessage("dtmf.digit is not a key")
    return digit


def _parse_mark(m: dict[str, Any]) -> Mark:
    mark = _obj(m, "mark")
    return Mark(
        sequence_number=_int(m.get("sequenceNumber"), "sequenceNumber"),
        stream_sid=_str(m.get("streamSid"), "streamSid"),
        name=_str(mark.get("name"), "mark.name", required=True),
    )


def _parse_stop(m: dict[str, Any]) -> Stop:
    stop = m.get("stop") or {}
    if not isinstance(stop, dict):
        raise InvalidMessage("stop is not an object")
    return Stop(
        sequence_number=_int(m.get("sequenceNumber"), "sequenceNumber"),
        stream_sid=_str(m.get("streamSid"), "streamSid"),
        call_sid=_str(stop.get("callSid"), "stop.callSid"),
        account_sid=_str(stop.get("accountSid"), "stop.accountSid"),
    )


_PARSERS = {
    "connected": _parse_connected,
    "start": _parse_start,
    "media": _parse_media,
    "dtmf": _parse_dtmf,
    "mark": _parse_mark,
    "stop": _parse_stop,
}


def _loads(text: str | bytes, fast: Any) -> Any:
    """JSON as the standard library reads it, given ``fast``: orjson's reading of it (about 4x faster).

    orjson accepts a subset of what ``json`` does (no NaN, no lone surrogates, no
    UTF-16 bytes, integers beyond 64 bits become floats), so anything it refused
    (``_UNREAD``), and every event but ``media`` (whose numbers Twilio sends as
    strings), is read again by ``json``: what a frame means never depends on
    which parser ran.
    """
    if type(fast) is dict and fast.get("event") == "media" and not _has_float_counter(fast):
        return fast
    return json.loads(text)


def _has_float_counter(message: dict[str, Any]) -> bool:
    """A float where a media frame has counters may be an integer beyond 64 bits that orjson made a float."""
    media = message.get("media")
    return type(message.get("sequenceNumber")) is float or (
        type(media) is dict and (type(media.get("chunk")) is float or type(media.get("timestamp")) is float)
    )


def parse_message(text: str | bytes) -> InboundMessage:
    """Parse one Twilio text frame, or raise a :class:`RemoteProtocolError`."""
    # Most frames: a media message in Twilio's form, read by orjson (its string counters are
    # never the floats orjson makes of big integers), built in one pass.
    try:
        fast = orjson.loads(text)
    except ValueError:
        fast = _UNREAD
    if type(fast) is dict and fast.get("event") == "media":
        media = _twilio_media(fast)
        if media is not None:
            return media
    return _parse_any(text, fast)


#: orjson refused the text (``json`` reads it, or says what is wrong with it).
_UNREAD = object()


def _parse_any(text: str | bytes, fast: Any) -> InboundMessage:
    try:
        message = _loads(text, fast)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedMessage("Twilio media stream message was malformed JSON") from exc
    except RecursionError:  # e.g. "[" * 30000: the C parser gives up at the recursion limit
        raise MalformedMessage("Twilio media stream message was nested too deeply") from None
    if not isinstance(message, dict):
        raise MalformedMessage("Twilio media stream message was not a JSON object")
    event = message.get("event")
    parser = _PARSERS.get(event) if isinstance(event, str) else None
    if parser is None:
        raise UnknownEvent("unknown event " + (repr(event)[:40] if isinstance(event, str) else type(event).__name__))
    try:
        return parser(message)
    except RemoteProtocolError:
        raise
    except (ValueError, TypeError, AttributeError) as exc:  # anything else malformed inside
        raise InvalidMessage(f"{event} message is malformed") from exc


# --- outbound -------------------------------------------------------------------
# Exact camelCase keys and nothing else: extra or missing fields trigger 31951.


def media_message(stream_sid: str, mulaw: bytes) -> str:
    """A ``media`` message carrying raw 8 kHz mu-law (no WAV header)."""
    payload = base64.b64encode(mulaw).decode("ascii")
    return '{"event":"media","streamSid":%s,"media":{"payload":"%s"}}' % (json.dumps(stream_sid), payload)


def mark_message(stream_sid: str, name: str) -> str:
    return json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}}, separators=(",", ":"))


def clear_message(stream_sid: str) -> str:
    return json.dumps({"event": "clear", "streamSid": stream_sid}, separators=(",", ":"))
