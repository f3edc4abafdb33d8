"""TwiML for a call that is not (or no longer) streamed: transfer, voicemail, overflow, goodbye.

Call control replaces a live call's TwiML with these (``Twiml`` in a Calls
update), and the voice webhook answers ``OVERFLOW`` when no stream can be
taken. The configurable ones come from a dict setting, ``{"SAY": text,
"DIAL": destination}`` or ``{"TWIML": "<Response>...</Response>"}``, checked
by ``manage.py check`` (voicecall.control_checks).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from twilio.twiml.voice_response import Dial, VoiceResponse

__all__ = [
    "E164",
    "is_destination",
    "dial_twiml",
    "configured_twiml",
    "voicemail_twiml",
    "goodbye_twiml",
    "FALLBACK_KEYS",
]

#: An E.164 phone number: "+", a non-zero digit, at most 15 digits in all.
E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
_SIP = re.compile(r"^sips?:[^\s<>\"]+@[^\s<>\"]+$", re.IGNORECASE)

#: Keys a fallback dict may hold.
FALLBACK_KEYS = frozenset({"SAY", "DIAL", "TWIML"})


def is_destination(value: str) -> bool:
    """True for what ``<Dial>`` can reach here: an E.164 number or a ``sip:`` URI."""
    return bool(E164.match(value) or _SIP.match(value))


def _dial(response: VoiceResponse, destination: str, *, caller_id: str | None = None) -> None:
    dial: Dial = response.dial(caller_id=caller_id)
    if destination.lower().startswith(("sip:", "sips:")):
        dial.sip(destination)
    else:
        dial.number(destination)


def dial_twiml(destination: str, *, caller_id: str | None = None, say: str = "") -> str:
    """``<Say>`` (optional), then ``<Dial>`` a number or SIP URI; the call ends when the dialled party hangs up."""
    if not is_destination(destination):
        raise ValueError(f"not an E.164 number or sip: URI: {destination!r}")
    response = VoiceResponse()
    if say:
        response.say(say)
    _dial(response, destination, caller_id=caller_id)
    return str(response)


def configured_twiml(config: Mapping[str, Any]) -> str:
    """TwiML for a fallback dict: its ``TWIML`` as is, else ``SAY`` then ``DIAL`` (or a hang-up)."""
    raw = str(config.get("TWIML") or "").strip()
    if raw:
        return raw
    response = VoiceResponse()
    say = str(config.get("SAY") or "")
    if say:
        response.say(say)
    destination = str(config.get("DIAL") or "")
    if destination:
        _dial(response, destination)
    else:
        response.hangup()
    return str(response)


def voicemail_twiml(config: Mapping[str, Any], *, recording_status_callback: str) -> str:
    """``VOICECALL["VOICEMAIL"]``: its ``TWIML``, else ``SAY``, a beep and ``<Record>``, then hang up.

    The ``<Record>`` action also goes to the recording status webhook: without
    an action Twilio requests the current document again, and its empty answer
    ends the call.
    """
    raw = str(config.get("TWIML") or "").strip()
    if raw:
        return raw
    response = VoiceResponse()
    say = str(config.get("SAY") or "")
    if say:
        response.say(say)
    response.record(
        max_length=int(config.get("MAX_SECONDS") or 120),
        play_beep=True,
        action=recording_status_callback,
        method="POST",
        recording_status_callback=recording_status_callback,
        recording_status_callback_method="POST",
        recording_status_callback_event="in-progress completed absent",
    )
    response.hangup()
    return str(response)


def goodbye_twiml(text: str = "") -> str:
    """``<Say>`` the goodbye (if any), then ``<Hangup/>``."""
    response = VoiceResponse()
    if text:
        response.say(text)
    response.hangup()
    return str(response)
