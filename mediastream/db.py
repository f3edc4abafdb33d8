"""Database work for media streams (admission, stream rows, events, transcripts), as plain sync functions.

The consumer calls these through ``database_sync_to_async`` (never on the
per-frame path). Admission runs in one transaction with the call row locked,
so two sockets racing for one call cannot both become its live stream.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import timedelta

from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from voicecall.models import Call, CallEvent, CallStatus, MediaStream, TranscriptSegment
from voicecall.records import locked_calls
from voicecall.tokens import verify_stream_token

from .closing import CLOSES, Close

__all__ = [
    "Admitted",
    "SERVER_ID",
    "admit_stream",
    "finish_stream",
    "add_event",
    "add_transcript",
    "reap_stale_streams",
]

logger = logging.getLogger(__name__)

def _pid_namespace() -> str:
    """Processes in another PID namespace (containers sharing a hostname) are not ours to probe."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "-"


#: Identifies this process in MediaStream.server ("host/pid-namespace:pid"), so the
#: reaper can tell which streams belong to a process of this host that has died.
SERVER_ID = f"{socket.gethostname()}/{_pid_namespace()}:{os.getpid()}"


@dataclass(frozen=True)
class Admitted:
    call_id: int
    stream_id: int
    call_sid: str
    stream_sid: str
    #: The call carries its own agent config (``place_call(agent=...)``), as its row said at admission:
    #: a config written after the stream started is not looked for.
    own_agent: bool = False


def admit_stream(
    *,
    call_sid: str,
    stream_sid: str,
    token: str | None,
    tracks: list[str],
    media_format: dict,
    custom_parameters: dict,
    stale_after: float,
) -> Admitted | Close:
    """Accept a ``start``: the call exists, is live, the token matches and is unspent, and it has no live stream.

    Unknown calls, ended calls and wrong tokens are refused from an unlocked
    read (the token compared in constant time against the stored hash), so a
    flood of bad starts never takes the call's row lock, which its webhooks
    need; each refusal writes at most one ``stream.rejected`` row per call per
    :data:`REJECTION_ROW_SECONDS`. The checks are repeated under the lock before
    the stream row is written. Admission spends the token: a later ``start``
    with it is refused "Invalid stream token" until the voice webhook mints a
    new one.
    """
    call = Call.objects.filter(call_sid=call_sid).only("pk", "status", "stream_token_hash").first()
    if call is None:
        return CLOSES.UNKNOWN_CALL
    refusal = _token_refusal(call, token)
    if refusal is not None:
        _note_rejection(call.pk, stream_sid, refusal.reason)
        return refusal
    with transaction.atomic():
        call = locked_calls().get(pk=call.pk)
        refusal = _token_refusal(call, token)  # ended, or the token spent, since the read above
        if refusal is not None:
            _note_rejection(call.pk, stream_sid, refusal.reason)
            return refusal
        now = timezone.now()
        live = list(call.streams.filter(stopped_at__isnull=True))
        for other in live:
            last_seen = other.heartbeat_at or other.started_at
            if now - last_seen > timedelta(seconds=stale_after):
                _close(other, now, CLOSES.INTERNAL_ERROR.code, "stale: owner stopped heartbeating")
            else:
                _note_rejection(call.pk, stream_sid, CLOSES.STREAM_EXISTS.reason, live=other.stream_sid)
                return CLOSES.STREAM_EXISTS
        try:
            with transaction.atomic():
                stream = MediaStream.objects.create(
                    stream_sid=stream_sid,
                    call=call,
                    started_at=now,
                    heartbeat_at=now,
                    tracks=tracks,
                    media_format=media_format,
                    custom_parameters=custom_parameters,
                    server=SERVER_ID,
                )
        except IntegrityError:
            _note_rejection(call.pk, stream_sid, "duplicate streamSid")
            return CLOSES.DUPLICATE_STREAM_SID
        call.stream_token_hash = ""  # spent: one stream per minted token
        fields = ["status", "stream_token_hash", "updated_at"]
        if call.status != CallStatus.IN_PROGRESS:
            call.status = CallStatus.IN_PROGRESS
        if call.answered_at is None:
            call.answered_at = now
            fields.append("answered_at")
        call.save(update_fields=fields)
        _event(call, stream, "stream.started", {"stream_sid": stream_sid, "tracks": tracks})
        return Admitted(
            call_id=call.pk, stream_id=stream.pk, call_sid=call_sid, stream_sid=stream_sid, own_agent=bool(call.agent)
        )


def _token_refusal(call: Call, token: str | None) -> Close | None:
    """Why ``token`` cannot start a stream on ``call`` (ended, or not its unspent token), or None."""
    if call.is_terminal:
        return CLOSES.CALL_ENDED
    if not verify_stream_token(token, call.stream_token_hash):
        return CLOSES.INVALID_TOKEN
    return None


#: At most one ``stream.rejected`` row per call in this many seconds; the refusals themselves are unchanged.
REJECTION_ROW_SECONDS = 1.0
# pg_try_advisory_xact_lock(class, id): the class keeps these locks apart from any other use.
_REJECTION_LOCK_CLASS = 0x6D73  # "ms"


def _note_rejection(call_id: int, stream_sid: str, reason: str, **extra: str) -> None:
    """Write a ``stream.rejected`` row unless the call got one within REJECTION_ROW_SECONDS.

    On PostgreSQL a non-blocking advisory lock per call makes the check and the
    insert one step across processes: whoever does not get it skips the row.
    """
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_try_advisory_xact_lock(%s, %s)", [_REJECTION_LOCK_CLASS, call_id % 2**31]
                )
                if not cursor.fetchone()[0]:
                    return
        since = timezone.now() - timedelta(seconds=REJECTION_ROW_SECONDS)
        if CallEvent.objects.filter(call_id=call_id, type="stream.rejected", created_at__gte=since).exists():
            return
        CallEvent.objects.create(
            call_id=call_id, type="stream.rejected", payload={"stream_sid": stream_sid, "reason": reason, **extra}
        )


def finish_stream(stream_id: int, *, close_code: int | None, close_reason: str, stats: dict) -> bool:
    """Record how the stream ended; False if it was already closed (idempotent)."""
    now = timezone.now()
    with transaction.atomic():
        stream = MediaStream.objects.select_for_update().filter(pk=stream_id).first()
        if stream is None:
            return False
        stream.stats = {**(stream.stats or {}), **stats}
        if stream.stopped_at is not None and stream.close_code is not None:
            stream.save(update_fields=["stats"])
            return False
        # Not stopped yet, or stopped by the call's terminal status callback
        # (no close code): the owner records how its socket really ended.
        _close(stream, stream.stopped_at or now, close_code, close_reason)
        _event(
            stream.call,
            stream,
            "stream.stopped",
            {"stream_sid": stream.stream_sid, "close_code": close_code, "close_reason": close_reason},
        )
        return True


def add_event(call_id: int, stream_id: int | None, type: str, payload: dict) -> None:
    CallEvent.objects.create(call_id=call_id, stream_id=stream_id, type=type, payload=payload)


def add_transcript(
    call_id: int,
    stream_id: int | None,
    *,
    speaker: str,
    text: str,
    interrupted: bool = False,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> int:
    return TranscriptSegment.objects.create(
        call_id=call_id,
        stream_id=stream_id,
        speaker=speaker,
        text=text,
        is_final=True,
        interrupted=interrupted,
        start_ms=start_ms,
        end_ms=end_ms,
    ).pk


def reap_stale_streams(*, stale_after: float, server_id: str | None = None) -> list[str]:
    """Close streams whose owner is gone, so a call is never stuck "streaming".

    A stream is stale when its heartbeat is older than ``stale_after`` seconds,
    or, with ``server_id``, when it belongs to this host but to a process that
    no longer exists (a daphne that was killed and restarted).
    """
    now = timezone.now()
    reaped: list[str] = []
    host = (server_id or SERVER_ID).rsplit(":", 1)[0]
    # Only the rows that can be stale: no recent heartbeat, or owned by another process of this host.
    suspects = Q(heartbeat_at__lt=now - timedelta(seconds=stale_after)) | Q(heartbeat_at__isnull=True)
    if server_id is not None:
        suspects |= Q(server__startswith=host + ":") & ~Q(server=server_id)
    candidates = MediaStream.objects.select_related("call").filter(suspects, stopped_at__isnull=True)
    for stream in candidates:
        last_seen = stream.heartbeat_at or stream.started_at
        dead_owner = server_id is not None and _dead_local_owner(stream.server, host)
        if dead_owner or now - last_seen > timedelta(seconds=stale_after):
            with transaction.atomic():
                locked = MediaStream.objects.select_for_update().filter(pk=stream.pk, stopped_at__isnull=True).first()
                if locked is None:
                    continue
                reason = "reaped: owner process gone" if dead_owner else "reaped: no heartbeat"
                _close(locked, now, CLOSES.INTERNAL_ERROR.code, reason)
                _event(stream.call, locked, "stream.reaped", {"stream_sid": locked.stream_sid, "reason": reason})
            reaped.append(stream.stream_sid)
    if reaped:
        logger.warning("Reaped %d stale media stream(s): %s", len(reaped), ", ".join(reaped[:10]))
    return reaped


def _dead_local_owner(server: str, host: str) -> bool:
    owner_host, _, pid = server.rpartition(":")
    if owner_host != host or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _close(stream: MediaStream, now, code: int | None, reason: str) -> None:
    stream.stopped_at = now
    stream.close_code = code
    stream.close_reason = reason[:200]
    stream.save(update_fields=["stopped_at", "close_code", "close_reason", "stats"])


def _event(call: Call, stream: MediaStream | None, type: str, payload: dict) -> None:
    CallEvent.objects.create(call=call, stream=stream, type=type, payload=payload)
