"""The running parts of one admitted stream, built together and closed together.

An admitted stream has an announcer (event rows, signals, the events group), a
player (speech out) and speech in (VAD and transcription). The consumer builds
them when the session says ``OpenStream`` and closes them at teardown. What
they report goes to the callbacks given here, which hand it to the session:
the parts never call each other.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from channels.db import database_sync_to_async
from channels.layers import BaseChannelLayer

from . import db, heartbeat
from .announcer import Announcer
from .backends import backends
from .db import Admitted
from .playback.player import PlayerConfig, StreamPlayer
from .session import Action, Announce, StreamSession
from .speech_in import SpeechIn

__all__ = ["StreamParts", "record_end"]

logger = logging.getLogger(__name__)


@dataclass
class StreamParts:
    announcer: Announcer
    player: StreamPlayer
    speech: SpeechIn

    @classmethod
    def open(
        cls,
        admitted: Admitted,
        *,
        session: StreamSession,
        perform: Callable[[list[Action]], None],
        send: Callable[[str], Awaitable[None]],
        sender: type,
        channel_layer: BaseChannelLayer | None,
        vad_enabled: bool,
    ) -> StreamParts:
        """Build and start the parts; what they report goes to ``session``, its actions to ``perform``."""
        announcer = Announcer(
            sender=sender,
            call_sid=admitted.call_sid,
            stream_sid=admitted.stream_sid,
            call_id=admitted.call_id,
            stream_id=admitted.stream_id,
            channel_layer=channel_layer,
        )
        announcer.start()
        player = StreamPlayer(
            stream_sid=admitted.stream_sid,
            send=send,
            tts=lambda: backends.tts,
            on_result=lambda item, result: perform(session.playback_finished(item, result)),
            on_started=lambda item: perform(session.playback_started(item)),
            config=PlayerConfig.from_settings(),
        )
        speech = SpeechIn(
            call_sid=admitted.call_sid,
            stream_sid=admitted.stream_sid,
            backend=backends.transcription,
            on_event=lambda event: perform(session.speech(event, player)),
            vad_enabled=vad_enabled,
        )
        session.stream_opened(finals_expected=speech.finals_expected)
        speech.start()
        heartbeat.beat(admitted.stream_id)
        return cls(announcer, player, speech)

    async def close(self) -> None:
        """Stop speech out and in; what they still owe (outcomes, a last final) is reported first."""
        await self.player.close("stream closed")
        await self.speech.close()
        heartbeat.forget(self.announcer.stream_id)



async def record_end(
    admitted: Admitted, parts: StreamParts | None, *, code: int | None, reason: str, stats: dict, last: list[Announce]
) -> None:
    """Write how the stream ended, after the rows it still owes (outcomes, transcripts); then its last events."""
    if parts is not None:
        await parts.announcer.flush()
    try:
        await database_sync_to_async(db.finish_stream)(
            admitted.stream_id, close_code=code, close_reason=reason, stats=stats
        )
    except Exception:
        logger.exception("Could not record the end of stream %s", admitted.stream_sid)
    if parts is not None:
        for announcement in last:
            parts.announcer.announce(announcement)
        await parts.announcer.close()
