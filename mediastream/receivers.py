"""What mediastream does when voicecall says something happened to a call.

* ``call_time_limit_reached``: the stream says the goodbye itself (in the
  call's own voice, through its TTS, so an agent's call ends as it began) and
  waits for it to play; voicecall then hangs up without Twilio's line.
"""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import receiver

from voicecall.models import Call
from voicecall.signals import call_time_limit_reached

from .api import Outcome, speak
from .conf import app_settings

__all__ = ["say_goodbye_at_the_time_limit"]

logger = logging.getLogger(__name__)

_SPOKEN = (Outcome.PLAYED, Outcome.UNCONFIRMED)


@receiver(call_time_limit_reached, sender=Call, dispatch_uid="mediastream.time_limit_goodbye")
def say_goodbye_at_the_time_limit(sender: Any, call: Call, **kwargs: Any) -> bool:
    """True once the goodbye played on the call's live stream; False when no stream could say it."""
    text = app_settings.TIME_LIMIT_GOODBYE
    if not text or not call.streams.filter(stopped_at__isnull=True).exists():
        return False
    try:
        result = speak(call.call_sid, text, wait=True, timeout=30, interruptible=False)
    except Exception as exc:  # the channel layer is down: Twilio's own line ends the call
        logger.warning("Call %s: the time-limit goodbye could not be sent (%s)", call.call_sid, type(exc).__name__)
        return False
    return result.outcome in _SPOKEN
