"""The relay's limits: its settings, and the table of open sessions that enforces them. No I/O.

Sessions live in the process that holds their WebSocket; the table counts
them per connection and for the whole process, and knows which connection
owns each one. A session id of another connection is unknown to a caller (it
can neither use nor end that session), and an expired one is unknown to
everyone: looking it up hands it back to be closed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from django.core.exceptions import ImproperlyConfigured

from ..conf import app_settings
from .protocol import TOO_MANY_SESSIONS, TOO_MANY_SESSIONS_FOR_CONNECTION, UNKNOWN_SESSION, RelayError

__all__ = ["Owned", "SessionTable", "TalkSettings", "talk_settings"]


@dataclass(frozen=True, slots=True)
class TalkSettings:
    """``MEDIASTREAM["TALK"]``, checked."""

    session_ttl_seconds: float
    max_sessions_per_connection: int
    max_sessions: int
    max_audio_base64_bytes: int

    @classmethod
    def from_dict(cls, values: dict) -> TalkSettings:
        def positive(key: str, kind: type) -> float | int:
            value = values.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or (
                kind is int and not float(value).is_integer()
            ):
                noun = "integer" if kind is int else "number"
                raise ImproperlyConfigured(f'MEDIASTREAM["TALK"]["{key}"] must be a positive {noun}, got {value!r}.')
            return kind(value)

        return cls(
            session_ttl_seconds=positive("SESSION_TTL_SECONDS", float),
            max_sessions_per_connection=positive("MAX_SESSIONS_PER_CONNECTION", int),
            max_sessions=positive("MAX_SESSIONS", int),
            max_audio_base64_bytes=positive("MAX_AUDIO_BASE64_BYTES", int),
        )


def talk_settings() -> TalkSettings:
    """The current ``MEDIASTREAM["TALK"]`` (raises ImproperlyConfigured for a bad value)."""
    talk = app_settings.TALK
    if not isinstance(talk, dict):
        raise ImproperlyConfigured(f'MEDIASTREAM["TALK"] must be a dict, got {type(talk).__name__}.')
    return TalkSettings.from_dict(talk)


class Owned(Protocol):
    id: str
    connection_id: str
    expires_at: float


S = TypeVar("S", bound=Owned)


class SessionTable(Generic[S]):
    """Open sessions by id, with the per-connection and process-wide caps."""

    def __init__(self) -> None:
        self._sessions: dict[str, S] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[S]:
        return iter(list(self._sessions.values()))

    def expired(self, now: float) -> list[S]:
        """Sessions past their expiry (the caller closes them)."""
        return [session for session in self._sessions.values() if now > session.expires_at]

    def admit(self, connection_id: str, limits: TalkSettings) -> None:
        """Raise :class:`RelayError` if ``connection_id`` may not open one more session now."""
        if len(self._sessions) >= limits.max_sessions:
            raise RelayError(TOO_MANY_SESSIONS)
        if self.count(connection_id) >= limits.max_sessions_per_connection:
            raise RelayError(TOO_MANY_SESSIONS_FOR_CONNECTION)

    def count(self, connection_id: str) -> int:
        return sum(1 for session in self._sessions.values() if session.connection_id == connection_id)

    def add(self, session: S) -> None:
        self._sessions[session.id] = session

    def discard(self, session: S) -> bool:
        """Forget ``session``; False if it was already gone (it is closed once)."""
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]
            return True
        return False

    def owned_by(self, connection_id: str) -> list[S]:
        return [session for session in self._sessions.values() if session.connection_id == connection_id]

    def lookup(self, session_id: str, connection_id: str, now: float) -> tuple[S | None, S | None]:
        """(the caller's live session, or None; an expired session of the caller's to close, or None).

        Raise nothing: the caller answers :data:`UNKNOWN_SESSION` when the first is None.
        """
        session = self._sessions.get(session_id)
        if session is None or session.connection_id != connection_id:
            return None, None
        if now > session.expires_at:
            return None, session
        return session, None


def unknown_session(request_id: object = None) -> RelayError:
    return RelayError(UNKNOWN_SESSION, request_id)  # type: ignore[arg-type]
