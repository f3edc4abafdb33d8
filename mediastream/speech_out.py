"""Speech out for one stream: the player, and what its outcomes mean to the rest of Django.

The player (``playback.player``) only knows queues, frames and marks. This
module turns channel-layer commands from ``mediastream.api`` into playback
items, answers the callers that wait, writes what the agent said into the
transcript, announces every step, decides whether caller speech is a barge-in,
and watches that Twilio keeps draining what is sent.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from voicecall.logsafe import sanitize

from . import db
from .conf import app_settings
from .audio import SAMPLE_RATE
from .playback.player import Outcome, PlaybackItem, PlaybackResult, PlayerConfig, StreamPlayer
from .tts import get_tts_backend

__all__ = ["SpeechOut", "no_stream_reply"]

logger = logging.getLogger(__name__)

_SPOKEN = (Outcome.PLAYED, Outcome.UNCONFIRMED, Outcome.INTERRUPTED)


def no_stream_reply(message: dict[str, Any]) -> dict[str, Any]:
    """What a waiting ``speak()`` hears when this socket holds no live stream."""
    item_id = message.get("item_id") or ""
    return {"type": "playback.result", **PlaybackResult(item_id, Outcome.NO_STREAM).as_dict()}


class SpeechOut:
    def __init__(
        self,
        *,
        admitted: db.Admitted,
        send: Callable[[str], Awaitable[None]],
        announce: Callable[..., None],
        reply: Callable[[str | None, dict[str, Any]], None],
        on_backpressure: Callable[[], None],
    ) -> None:
        self.admitted = admitted
        self._send_text = send
        self._announce = announce
        self._reply = reply
        self._on_backpressure = on_backpressure
        self._max_unconfirmed_bytes = int(app_settings.MAX_UNCONFIRMED_AUDIO_SECONDS * SAMPLE_RATE)
        self.player = StreamPlayer(
            stream_sid=admitted.stream_sid,
            send=self._send,
            tts=get_tts_backend,
            on_result=self._finished,
            on_started=self._started,
            config=PlayerConfig.from_settings(),
        )

    # --- commands ---------------------------------------------------------------

    def say(self, message: dict[str, Any]) -> None:
        """A ``playback.say`` command from ``mediastream.api``: text or mu-law audio."""
        item = PlaybackItem(
            text=message.get("text") or "",
            audio=message.get("audio"),
            id=message.get("item_id") or PlaybackItem().id,
            reply_to=message.get("reply_to"),
            interruptible=message.get("interruptible", True),
        )
        self._announce("playback.queued", {"item_id": item.id, "text": item.text}, broadcast=False)
        if self.player.enqueue(item):
            self._reply(item.reply_to, {"type": "playback.queued", "item_id": item.id, "stream_sid": self.admitted.stream_sid})

    def greet(self, text: str) -> None:
        """The stream greeting; caller speech may not cut it off when the settings say so."""
        self.player.enqueue(PlaybackItem(text=text, interruptible=not app_settings.SUPPRESS_BARGE_IN_DURING_GREETING))

    async def interrupt(self, reason: str) -> int:
        return await self.player.interrupt(sanitize(reason or "interrupted", 60))

    def is_barge_in(self) -> bool:
        """Whether caller speech now should cut the agent off.

        Only when the caller talks over the agent: something is queued, playing,
        or still buffered at Twilio (sent but not yet confirmed by a mark), and
        what plays may be interrupted.
        """
        player = self.player
        if not app_settings.BARGE_IN or not (player.busy or player.unconfirmed_audio_bytes):
            return False
        return not player.busy or player.interruptible

    def on_mark(self, name: str) -> None:
        self.player.on_mark(name)

    async def close(self) -> None:
        await self.player.close("stream closed")

    # --- player callbacks -------------------------------------------------------

    async def _send(self, text: str) -> None:
        await self._send_text(text)
        # daphne's send() never blocks: what Twilio has not confirmed playing is
        # the only sign that it stopped draining.
        if self.player.unconfirmed_audio_bytes > self._max_unconfirmed_bytes:
            logger.warning(
                "Media stream %s: %.1fs of audio sent but not played",
                self.admitted.stream_sid,
                self.player.unconfirmed_audio_bytes / SAMPLE_RATE,
            )
            self._on_backpressure()

    def _started(self, item: PlaybackItem) -> None:
        self._announce("playback.started", {"item_id": item.id, "text": item.text})

    def _finished(self, item: PlaybackItem, result: PlaybackResult) -> None:
        store = None
        # What reached the caller is part of the transcript, interrupted or not.
        if item.text and result.outcome in _SPOKEN and (result.outcome is not Outcome.INTERRUPTED or result.audio_seconds):
            call_id, stream_id = self.admitted.call_id, self.admitted.stream_id
            interrupted = result.outcome is Outcome.INTERRUPTED

            def store() -> None:
                db.add_transcript(call_id, stream_id, speaker="agent", text=item.text, interrupted=interrupted)

        data = result.as_dict()
        self._announce("playback.finished", data, also=store)
        self._reply(item.reply_to, {"type": "playback.result", **data})
