"""The TwiML documents the webhooks answer with, built with twilio's ``VoiceResponse``.

Kept apart from the views so the exact markup (stream URL, token parameter,
status callback) can be read and tested in one place. The builder escapes
attribute values, so nothing here concatenates XML by hand.
"""

from __future__ import annotations

from twilio.twiml.voice_response import VoiceResponse

from .conf import voicecall_settings
from .twilio_auth import public_websocket_url_for

__all__ = [
    "TWIML_CONTENT_TYPE",
    "STREAM_TOKEN_PARAMETER",
    "stream_url",
    "connect_stream_twiml",
    "hangup_twiml",
    "retry_twiml",
    "empty_twiml",
]

TWIML_CONTENT_TYPE = "text/xml"
#: Name of the ``<Parameter>`` carrying the per-call stream token.
STREAM_TOKEN_PARAMETER = "token"


def stream_url() -> str:
    """``wss://<public host><STREAM_PATH>``; never a query string (Twilio refuses them)."""
    return public_websocket_url_for(str(voicecall_settings.STREAM_PATH))


def connect_stream_twiml(token: str, *, status_callback: str | None = None, greeting: str = "") -> str:
    """``<Say>`` the greeting (if any), then ``<Connect><Stream>`` with the token as a ``<Parameter>``."""
    response = VoiceResponse()
    if greeting:
        response.say(greeting)
    connect = response.connect()
    stream = connect.stream(
        url=stream_url(),
        status_callback=status_callback,
        status_callback_method="POST" if status_callback else None,
    )
    stream.parameter(name=STREAM_TOKEN_PARAMETER, value=token)
    return str(response)


def hangup_twiml() -> str:
    """``<Response><Hangup/></Response>``: the answer for a call that has already ended."""
    response = VoiceResponse()
    response.hangup()
    return str(response)


def retry_twiml(url: str, pause_seconds: int = 1) -> str:
    """``<Pause>`` then ``<Redirect>`` to ``url``: ask Twilio for this call's TwiML again shortly."""
    response = VoiceResponse()
    response.pause(length=pause_seconds)
    response.redirect(url, method="POST")
    return str(response)


def empty_twiml() -> str:
    """``<Response/>``: acknowledges a callback without telling Twilio to do anything."""
    return str(VoiceResponse())
