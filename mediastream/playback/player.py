"""Speech out for one stream: a FIFO of items, one playing at a time, paced to Twilio.

The player owns everything between "say this" and Twilio's mark echo:

* a queue of at most ``max_pending`` waiting items (one more is rejected at once);
* synthesis of the next text piece while the current one plays;
* mu-law audio in messages of ``chunk_ms`` (whole 20 ms frames) paced against an
  absolute clock, keeping a small bounded lead of audio buffered at Twilio (no
  gaps, and little stale audio on barge-in);
* a completion mark per item, resolved by Twilio's echo or a timeout;
* barge-in: abort, resolve the waiting items as interrupted, ``clear``, and
  ignore echoes of the marks that were cleared.

It knows nothing about Channels or the database: the consumer gives it a
``send`` coroutine and a ``on_result`` callback, so tests drive it directly.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum

from ..metrics import TTS_FIRST_AUDIO
from ..protocol import clear_message, mark_message, media_message
from ..tts.base import BaseTTSBackend, TTSError
from ..audio import FRAME_BYTES, FRAME_SECONDS, MulawConverter
from .textsplit import split_text

__all__ = ["Outcome", "PlaybackItem", "PlaybackResult", "StreamPlayer", "PlayerConfig"]

logger = logging.getLogger(__name__)

_item_ids = itertools.count(1)

FRAME_MS = round(FRAME_SECONDS * 1000)
BYTES_PER_SECOND = FRAME_BYTES / FRAME_SECONDS


class Outcome(str, Enum):
    PLAYED = "played"  # Twilio echoed the item's mark: the audio was played
    UNCONFIRMED = "unconfirmed"  # no echo within duration + grace; probably played
    INTERRUPTED = "interrupted"  # barge-in, interrupt() or stream teardown
    FAILED = "failed"  # synthesis error, timeout or empty audio
    REJECTED = "rejected"  # the stream's queue was full
    NO_STREAM = "no_stream"  # no live stream for the call (reported by the API)


@dataclass
class PlaybackItem:
    """Something to say: text to synthesize, ready 8 kHz mu-law audio, or a stream of either.

    A streamed item is a reply still being written: text pieces (synthesized
    one after another, the next while one plays) or mu-law chunks arrive on
    ``stream``, and ``None`` ends it. Its ``text`` grows as pieces arrive.
    """

    text: str = ""
    audio: bytes | None = None
    stream: asyncio.Queue | None = None
    #: The caller turn a reply answers (None for anything else).
    turn_id: int | None = None
    id: str = field(default_factory=lambda: f"say-{next(_item_ids)}")
    reply_to: str | None = None
    #: False for items caller speech must not cut off (e.g. a greeting); interrupt() still does.
    interruptible: bool = True
    queued_at: float = field(default_factory=time.monotonic)
    # Progress, filled in while the item plays.
    started_at: float | None = None
    first_audio_at: float | None = None
    audio_bytes_sent: int = 0
    #: When the audio sent so far finishes playing at Twilio (the player's clock).
    played_until: float | None = None
    #: (text, audio bytes sent when its first frame went out) per spoken piece.
    pieces: list[tuple[str, int]] = field(default_factory=list)

    def heard_text(self, unplayed_bytes: int = 0) -> str:
        """The text the caller heard: pieces whose audio started, the last one cut in proportion.

        ``unplayed_bytes`` were sent but, by Twilio's marks, not played (cleared at barge-in).
        """
        heard = max(0, self.audio_bytes_sent - unplayed_bytes)
        if not self.pieces:
            return self.text if heard >= self.audio_bytes_sent else _cut(self.text, heard / max(1, self.audio_bytes_sent))
        words: list[str] = []
        for index, (text, start) in enumerate(self.pieces):
            if start >= heard:
                break
            end = self.pieces[index + 1][1] if index + 1 < len(self.pieces) else self.audio_bytes_sent
            words.append(text if heard >= end else _cut(text, (heard - start) / max(1, end - start)))
        return " ".join(w for w in words if w)


def _cut(text: str, fraction: float) -> str:
    """The first ``fraction`` of ``text``'s words."""
    words = text.split()
    return " ".join(words[: round(len(words) * min(1.0, max(0.0, fraction)))])


class _PieceStart:
    """Marks where a streamed piece's audio begins in the producer's queue."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


@dataclass
class PlaybackResult:
    item_id: str
    outcome: Outcome
    text: str = ""
    error: str = ""
    reason: str = ""
    audio_seconds: float = 0.0
    queued_ms: float | None = None  # time spent waiting in the queue
    first_audio_ms: float | None = None  # from start of play to the first frame sent
    total_ms: float | None = None  # from queued to resolved
    heard_text: str = ""  # what the caller heard of the text (all of it unless interrupted)
    heard_seconds: float = 0.0  # how much of the audio the caller heard
    turn_id: int | None = None

    def as_dict(self) -> dict:
        return {
            "item_id": self.item_id,
            "outcome": self.outcome.value,
            "text": self.text,
            "error": self.error,
            "reason": self.reason,
            "audio_seconds": round(self.audio_seconds, 3),
            "queued_ms": _round(self.queued_ms),
            "first_audio_ms": _round(self.first_audio_ms),
            "total_ms": _round(self.total_ms),
            "heard_text": self.heard_text,
            "heard_seconds": round(self.heard_seconds, 3),
            "turn_id": self.turn_id,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


@dataclass(frozen=True)
class PlayerConfig:
    max_pending: int = 8
    synthesis_timeout: float = 8.0
    max_chars: int = 320
    lead_seconds: float = 0.3
    mark_grace_seconds: float = 2.0
    max_ignored_marks: int = 64
    progress_mark_seconds: float = 1.0  # how often playback progress is confirmed by marks
    chunk_ms: int = 100  # audio per media message, a multiple of 20 (cut to the lead + 20 ms)

    @classmethod
    def from_settings(cls) -> PlayerConfig:
        from ..conf import app_settings

        return cls(
            max_pending=app_settings.TTS_MAX_PENDING,
            synthesis_timeout=app_settings.TTS_SYNTHESIS_TIMEOUT,
            max_chars=app_settings.TTS_MAX_CHARS,
            lead_seconds=app_settings.PLAYBACK_LEAD_SECONDS,
            mark_grace_seconds=app_settings.PLAYBACK_MARK_GRACE_SECONDS,
            max_ignored_marks=app_settings.MAX_IGNORED_MARKS,
            chunk_ms=app_settings.PLAYBACK_CHUNK_MS,
        )

    def frames_per_message(self) -> int:
        """Whole 20 ms frames per media message: ``chunk_ms``, at most the lead plus one frame.

        A message goes out when Twilio holds at most the lead plus one frame
        after it; a bigger one would have to be sent after its first frame
        was due to play.
        """
        chunk = max(1, int(self.chunk_ms) // FRAME_MS)
        return max(1, min(chunk, int(self.lead_seconds / FRAME_SECONDS + 1e-9) + 1))


class StreamPlayer:
    """The speech-out queue of one stream."""

    def __init__(
        self,
        *,
        stream_sid: str,
        send: Callable[[str], Awaitable[None]],
        tts: Callable[[], BaseTTSBackend],
        on_result: Callable[[PlaybackItem, PlaybackResult], None],
        on_started: Callable[[PlaybackItem], None] = lambda item: None,
        on_first_audio: Callable[[PlaybackItem], None] = lambda item: None,
        config: PlayerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.stream_sid = stream_sid
        self._send = send
        self._tts = tts
        self._on_result = on_result
        self._on_started = on_started
        self._on_first_audio = on_first_audio
        self.config = config or PlayerConfig()
        self._clock = clock
        self._sleep = sleep
        self._waiting: deque[PlaybackItem] = deque()
        self._wakeup = asyncio.Event()
        self._current: PlaybackItem | None = None
        self._current_task: asyncio.Task | None = None
        self._worker: asyncio.Task | None = None
        self._pending_marks: dict[str, asyncio.Future] = {}
        self._ignored_marks: OrderedDict[str, None] = OrderedDict()
        self._closed = False
        # Outbound accounting for backpressure: audio bytes sent, and the
        # count covered by the newest echoed mark.
        self.audio_bytes_sent = 0
        self.audio_bytes_confirmed = 0
        self._mark_positions: dict[str, int] = {}
        self._mark_due: dict[str, float] = {}  # mark -> when the audio before it ends playing (player clock)
        #: The latest mark round trip: echo time minus when its audio should have finished playing.
        self.mark_rtt_ms: float | None = None
        self._mark_seq = itertools.count(1)

    # --- commands -----------------------------------------------------------

    def enqueue(self, item: PlaybackItem) -> bool:
        """Queue an item; False (and a REJECTED result) when the queue is full or closed."""
        if self._closed or len(self._waiting) >= self.config.max_pending:
            self._resolve(item, Outcome.REJECTED, error="queue full" if not self._closed else "stream closed")
            return False
        self._waiting.append(item)
        self._wakeup.set()
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name=f"playback:{self.stream_sid}")
        return True

    async def interrupt(self, reason: str = "interrupted") -> int:
        """Barge-in: abort the playing item, resolve the waiting ones, send ``clear``.

        Returns how many items were interrupted. ``clear`` is sent even when
        nothing is queued: Twilio may still be playing buffered audio.
        """
        count = self._abort_all(reason)
        self._ignore_pending_marks()
        await self._send(clear_message(self.stream_sid))
        return count

    def on_mark(self, name: str) -> bool:
        """Twilio echoed a mark. Returns False for echoes that confirm nothing."""
        if name in self._ignored_marks:
            del self._ignored_marks[name]
            return False
        position = self._mark_positions.pop(name, None)
        if position is not None:
            self.audio_bytes_confirmed = max(self.audio_bytes_confirmed, position)
        due = self._mark_due.pop(name, None)
        if due is not None:
            # How late the echo came after the audio before the mark should have played out.
            self.mark_rtt_ms = round(max(0.0, self._clock() - due) * 1000, 1)
        future = self._pending_marks.pop(name, None)
        if future is not None and not future.done():
            future.set_result(True)
            return True
        return position is not None

    @property
    def unconfirmed_audio_bytes(self) -> int:
        return self.audio_bytes_sent - self.audio_bytes_confirmed

    @property
    def interruptible(self) -> bool:
        """Whether caller speech may barge in on what is playing now."""
        return self._current is None or self._current.interruptible

    @property
    def queue_depth(self) -> int:
        """Items waiting behind the playing one."""
        return len(self._waiting)

    @property
    def busy(self) -> bool:
        return self._current is not None or bool(self._waiting)

    async def close(self, reason: str = "stream closed") -> None:
        """Teardown: everything queued resolves as interrupted; nothing waits forever."""
        self._closed = True
        self._abort_all(reason)
        self._ignore_pending_marks()
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)

    # --- internals ----------------------------------------------------------

    def _abort_all(self, reason: str) -> int:
        count = 0
        while self._waiting:
            self._resolve(self._waiting.popleft(), Outcome.INTERRUPTED, reason=reason)
            count += 1
        task = self._current_task
        if task is not None and not task.done():
            task.cancel(msg=reason)
            count += 1
        return count

    def _ignore_pending_marks(self) -> None:
        names = list(self._pending_marks) + list(self._mark_positions)
        for future in self._pending_marks.values():
            if not future.done():
                future.cancel()
        self._pending_marks.clear()
        self._mark_positions.clear()
        self._mark_due.clear()
        # Twilio echoes every pending mark after clear; those echoes confirm nothing.
        self.audio_bytes_confirmed = self.audio_bytes_sent
        for name in names:
            self._ignored_marks[name] = None
            self._ignored_marks.move_to_end(name)
        while len(self._ignored_marks) > self.config.max_ignored_marks:
            self._ignored_marks.popitem(last=False)

    def _resolve(self, item: PlaybackItem, outcome: Outcome, **fields) -> PlaybackResult:
        now = time.monotonic()
        if item.started_at is not None:
            fields.setdefault("queued_ms", (item.started_at - item.queued_at) * 1000)
            fields.setdefault("audio_seconds", item.audio_bytes_sent * FRAME_SECONDS / FRAME_BYTES)
            if item.first_audio_at is not None:
                fields.setdefault("first_audio_ms", (item.first_audio_at - item.started_at) * 1000)
        unplayed = 0
        if outcome is Outcome.INTERRUPTED and item.played_until is not None:
            # What was still buffered at Twilio (by the playout clock) was cleared, not played.
            ahead = max(0.0, item.played_until - self._clock())
            unplayed = min(item.audio_bytes_sent, int(ahead * BYTES_PER_SECOND))
        fields.setdefault("heard_seconds", (item.audio_bytes_sent - unplayed) * FRAME_SECONDS / FRAME_BYTES)
        if item.text and "heard_text" not in fields:
            fields["heard_text"] = item.heard_text(unplayed) if item.started_at is not None else ""
        result = PlaybackResult(
            item_id=item.id,
            outcome=outcome,
            text=item.text,
            total_ms=(now - item.queued_at) * 1000,
            turn_id=item.turn_id,
            **fields,
        )
        try:
            self._on_result(item, result)
        except Exception:
            logger.exception("playback result callback failed for %s", item.id)
        return result

    async def _run(self) -> None:
        while not self._closed:
            if not self._waiting:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            item = self._waiting.popleft()
            self._current = item
            task = asyncio.create_task(self._play(item), name=f"play:{item.id}")
            self._current_task = task
            try:
                result_fields = await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.done():  # the worker itself is being cancelled (teardown)
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    self._resolve(item, Outcome.INTERRUPTED, reason="stream closed")
                    raise
                reason = _cancel_reason(task) or "interrupted"
                self._resolve(item, Outcome.INTERRUPTED, reason=reason)
            except _PlaybackFailed as failure:
                self._resolve(item, Outcome.FAILED, error=str(failure), **failure.fields)
            except Exception as exc:  # a bug, not a vendor failure: keep the queue going
                logger.exception("playback of %s crashed", item.id)
                self._resolve(item, Outcome.FAILED, error=f"internal error: {type(exc).__name__}")
            else:
                self._resolve(item, **result_fields)
            finally:
                self._current = None
                self._current_task = None

    async def _play(self, item: PlaybackItem) -> dict:
        item.started_at = time.monotonic()
        self._on_started(item)
        source = _Source()
        pacer = _Pacer(self, item, lead=self.config.lead_seconds, ready=source.ready)
        async for mulaw in self._audio_for(item, source):
            if type(mulaw) is _PieceStart:
                # The piece before it is all here: its whole frames go now, not after the next
                # piece's synthesis (which may outlast what Twilio has buffered).
                await pacer.flush_whole()
                item.pieces.append((mulaw.text, item.audio_bytes_sent + len(pacer._remainder)))
                continue
            await pacer.feed(mulaw)
        await pacer.finish()
        if pacer.audio_bytes == 0:
            raise _PlaybackFailed("synthesis produced no audio")
        audio_seconds = pacer.audio_bytes * FRAME_SECONDS / FRAME_BYTES
        name = f"{item.id}:end"
        future = asyncio.get_running_loop().create_future()
        self._pending_marks[name] = future
        self._mark_positions[name] = self.audio_bytes_sent
        self._mark_due[name] = pacer.played_until()
        await self._send(mark_message(self.stream_sid, name))
        timeout = audio_seconds + self.config.mark_grace_seconds
        try:
            confirmed = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            confirmed = False
            self._pending_marks.pop(name, None)
            logger.info("playback mark %s not echoed within %.1fs; continuing", name, timeout)
        return {"outcome": Outcome.PLAYED if confirmed else Outcome.UNCONFIRMED}

    async def _audio_for(self, item: PlaybackItem, source: _Source) -> AsyncIterator[bytes]:
        """Mu-law audio for the item, synthesizing the next piece while this one plays."""
        if item.stream is not None:
            pieces = self._streamed_pieces(item)
        elif item.audio is not None:
            source.complete = True
            yield item.audio
            return
        else:
            pieces = split_text(item.text, self.config.max_chars)
            if not pieces:
                raise _PlaybackFailed("nothing to say")
        backend = self._tts()
        # One piece of look-ahead: the producer synthesizes piece n+1 while piece n plays.
        queue: asyncio.Queue = asyncio.Queue(maxsize=4)
        source.queue = queue
        producer = asyncio.create_task(self._synthesize(backend, pieces, queue), name=f"synth:{item.id}")
        try:
            while True:
                chunk = await queue.get()
                if chunk is None:
                    break
                if isinstance(chunk, BaseException):
                    raise chunk
                yield chunk
        finally:
            if not producer.done():
                producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)

    async def _streamed_pieces(self, item: PlaybackItem) -> AsyncIterator[str | bytes]:
        """A streamed item's pieces as they arrive: text split to ``max_chars``, audio as is."""
        while True:
            piece = await item.stream.get()
            if piece is None:
                return
            if isinstance(piece, bytes):
                yield piece
                continue
            item.text = f"{item.text} {piece}".strip() if item.text else piece.strip()
            for part in split_text(piece, self.config.max_chars):
                yield part

    async def _synthesize(
        self, backend: BaseTTSBackend, pieces: list[str] | AsyncIterator[str | bytes], queue: asyncio.Queue
    ) -> None:
        timeout = self.config.synthesis_timeout
        streamed = not isinstance(pieces, list)
        total = "?" if streamed else len(pieces)
        try:
            index = 0
            async for piece in _iterate(pieces):
                index += 1
                if isinstance(piece, bytes):  # ready audio (a speech agent's)
                    await queue.put(piece)
                    continue
                if streamed:
                    await queue.put(_PieceStart(piece))
                converter = MulawConverter()
                produced = 0
                asked = time.monotonic()
                try:
                    async with asyncio.timeout(timeout):
                        async for chunk in backend.synthesize(piece):
                            if asked:
                                TTS_FIRST_AUDIO.labels(type(backend).__name__).observe(time.monotonic() - asked)
                                asked = 0.0
                            data = converter.feed(chunk)
                            if data:
                                produced += len(data)
                                await queue.put(data)
                        tail = converter.flush()
                except TimeoutError:
                    raise _PlaybackFailed(
                        f"synthesis timed out after {timeout:g}s (piece {index} of {total})"
                    ) from None
                except TTSError as exc:
                    raise _PlaybackFailed(f"synthesis failed: {exc}") from None
                if tail:
                    produced += len(tail)
                    await queue.put(tail)
                if produced == 0:
                    raise _PlaybackFailed(f"synthesis produced no audio (piece {index} of {total})")
            await queue.put(None)
        except asyncio.CancelledError:
            raise
        except _PlaybackFailed as failure:
            await queue.put(failure)
        except Exception as exc:
            logger.exception("TTS backend crashed")
            await queue.put(_PlaybackFailed(f"synthesis failed: {type(exc).__name__}: {exc}"[:200]))


async def _iterate(pieces: list[str] | AsyncIterator[str | bytes]) -> AsyncIterator[str | bytes]:
    if isinstance(pieces, list):
        for piece in pieces:
            yield piece
    else:
        async for piece in pieces:
            yield piece


class _PlaybackFailed(Exception):
    def __init__(self, message: str, **fields) -> None:
        super().__init__(message)
        self.fields = fields


def _cancel_reason(task: asyncio.Task) -> str:
    try:
        task.result()
    except asyncio.CancelledError as exc:
        return str(exc.args[0]) if exc.args else ""
    except BaseException:
        return ""
    return ""


class _Source:
    """Whether more of an item's audio, or its end, is already waiting: then a short message waits to be filled."""

    __slots__ = ("queue", "complete")

    def __init__(self) -> None:
        self.queue: asyncio.Queue | None = None
        self.complete = False  # ready audio: all of it was fed at once, the end follows

    def ready(self) -> bool:
        return self.complete or (self.queue is not None and not self.queue.empty())


class _Pacer:
    """Sends media messages of whole 20 ms frames no further ahead of real time than the lead.

    Twilio plays outbound media of any size in order, so a message carries
    ``chunk_ms`` of audio (PlayerConfig.frames_per_message): one wake-up, one
    encoding and one WebSocket frame per chunk instead of per 20 ms frame.
    Twilio's playout is tracked against an absolute clock: the audio sent so
    far ends at ``t0 + frames_sent*20ms``, and a message of n frames is due
    when that end is ``lead + 20ms - n*20ms`` ahead of now, so Twilio holds at
    most the lead plus one frame after it (as with one frame per message) and
    late wake-ups never accumulate. Fewer frames go out when the source has no
    more waiting (a piece's tail, a source slower than real time): the audio
    at hand is never held back while Twilio's buffer drains. If the source
    underruns (Twilio's buffer empties), the playout clock restarts from the
    next frame. Progress marks every ``progress_mark_seconds`` of audio let the
    consumer see how far Twilio's playback lags what was sent.
    """

    def __init__(self, player: StreamPlayer, item: PlaybackItem, *, lead: float, ready: Callable[[], bool]) -> None:
        self.player = player
        self.item = item
        self.lead = lead
        self.ready = ready
        self.t0: float | None = None
        self.frames_sent = 0
        self.audio_bytes = 0
        #: Audio not sent yet (whole frames waiting to fill a message, and a partial frame).
        self._remainder = b""
        self._frames = player.config.frames_per_message()
        self._since_mark = 0
        self._mark_every = max(1, round(player.config.progress_mark_seconds / FRAME_SECONDS))

    def played_until(self) -> float:
        """When the audio sent so far finishes playing at Twilio (player clock)."""
        now = self.player._clock()
        return now if self.t0 is None else max(now, self.t0 + self.frames_sent * FRAME_SECONDS)

    async def feed(self, mulaw: bytes) -> None:
        data = self._remainder + mulaw if self._remainder else mulaw
        message = self._frames * FRAME_BYTES
        offset = 0
        while len(data) - offset >= message:
            await self._send(data[offset : offset + message])
            offset += message
        whole = (len(data) - offset) // FRAME_BYTES * FRAME_BYTES
        if whole and not self.ready():  # nothing more waiting: send what is here rather than hold it
            await self._send(data[offset : offset + whole])
            offset += whole
        self._remainder = data[offset:]

    async def flush_whole(self) -> None:
        """Send the whole frames waiting to fill a message (a partial frame stays for the next audio)."""
        whole = len(self._remainder) // FRAME_BYTES * FRAME_BYTES
        if whole:
            data, self._remainder = self._remainder, self._remainder[whole:]
            message = self._frames * FRAME_BYTES
            for offset in range(0, whole, message):
                await self._send(data[offset : min(offset + message, whole)])

    async def finish(self) -> None:
        data, self._remainder = self._remainder, b""
        if data:
            data += b"\xff" * (-len(data) % FRAME_BYTES)  # pad to a whole 20 ms with silence
            message = self._frames * FRAME_BYTES
            for offset in range(0, len(data), message):
                await self._send(data[offset : offset + message])

    async def _send(self, audio: bytes) -> None:
        player = self.player
        frames = len(audio) // FRAME_BYTES
        now = player._clock()
        if self.t0 is None:
            self.t0 = now
        played_until = self.t0 + self.frames_sent * FRAME_SECONDS
        if now > played_until:  # underrun: Twilio went quiet, restart the playout clock
            self.t0 = now - self.frames_sent * FRAME_SECONDS
            played_until = now
        due = played_until + (frames - 1) * FRAME_SECONDS - self.lead
        if due > now:
            await player._sleep(due - now)
        item = self.item
        # Counted before the send, so the send's backpressure check sees this message too.
        item.audio_bytes_sent += len(audio)
        self.frames_sent += frames
        self.audio_bytes += len(audio)
        player.audio_bytes_sent += len(audio)
        item.played_until = self.t0 + self.frames_sent * FRAME_SECONDS
        await player._send(media_message(player.stream_sid, audio))
        if item.first_audio_at is None:
            item.first_audio_at = time.monotonic()
            try:
                player._on_first_audio(item)
            except Exception:
                logger.exception("first-audio callback failed for %s", item.id)
        self._since_mark += frames
        if self._since_mark >= self._mark_every:
            self._since_mark -= self._mark_every
            name = f"progress-{next(player._mark_seq)}"
            player._mark_positions[name] = player.audio_bytes_sent
            player._mark_due[name] = self.played_until()
            await player._send(mark_message(player.stream_sid, name))
