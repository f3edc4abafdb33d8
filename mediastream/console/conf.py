"""The console's settings: ``MEDIASTREAM["CONSOLE"]``, merged over :data:`DEFAULTS`.

Read through mediastream's own settings object, so ``override_settings`` of
``MEDIASTREAM`` applies at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..conf import app_settings

__all__ = ["DEFAULTS", "ConsoleSettings", "console_settings"]

DEFAULTS = {
    # Event-log rows a (re)connecting console catches up with: the call's latest ones.
    "CATCH_UP_EVENTS": 300,
    # How often an open console re-reads the call's record (status, streams) and the
    # event-log rows no stream broadcasts (queued lines, Twilio callbacks, call control).
    "POLL_SECONDS": 1.0,
    # Actions one console may have in flight at once (a "say" waits for its outcome).
    "MAX_ACTIONS": 4,
    # How long a "say" waits for its outcome before it is reported unconfirmed.
    "SAY_TIMEOUT_SECONDS": 60.0,
    # The longest line "say" accepts (the admin's "Say a line" form takes as much).
    "MAX_SAY_CHARS": 2000,
    # Larger messages from the browser are answered with an error and not read.
    "MAX_MESSAGE_BYTES": 16 * 1024,
}


@dataclass(frozen=True)
class ConsoleSettings:
    catch_up_events: int
    poll_seconds: float
    max_actions: int
    say_timeout_seconds: float
    max_say_chars: int
    max_message_bytes: int


def console_settings() -> ConsoleSettings:
    """The settings in force now."""
    user = app_settings.as_dict().get("CONSOLE") or {}
    merged = {**DEFAULTS, **user}
    return ConsoleSettings(
        catch_up_events=int(merged["CATCH_UP_EVENTS"]),
        poll_seconds=float(merged["POLL_SECONDS"]),
        max_actions=int(merged["MAX_ACTIONS"]),
        say_timeout_seconds=float(merged["SAY_TIMEOUT_SECONDS"]),
        max_say_chars=int(merged["MAX_SAY_CHARS"]),
        max_message_bytes=int(merged["MAX_MESSAGE_BYTES"]),
    )
