"""A scripted conversation with a running server: ``manage.py simulate_call --script FILE``.

The caller's side of a call, turn by turn: each utterance is spoken (audio
made by this process's TTS, the embedded Piper by default, as ``--say`` does),
then the caller listens until the agent's reply to it has finished
(``agent.reply.finished`` in the call's event log) before the next one.
Between utterances the line carries silence, 20 ms frames on a real-time
clock, as Twilio's does: the server's VAD ends a turn on that silence.

A script is a text file, one step a line (blank lines and ``#`` comments
skipped)::

    What are your opening hours?
    [pause 1.5]
    [dtmf 2]
    Goodbye.

or a JSON list of steps, each a string (an utterance) or an object with
``say`` or ``dtmf`` and an optional ``pause`` (seconds of silence first)::

    ["What are your opening hours?", {"pause": 1.5, "dtmf": "2"}, {"say": "Goodbye."}]

Each turn is printed with what the server heard, what the agent said, its
tools, and its latencies: caller stopped → first agent audio frame on this
socket (this process's clock), and the event log's first token, first audio
and reply finished (milliseconds after the turn started, the server's clock).
Works with any agent backend: a text agent (ScriptedAgent,
ChatCompletionsAgent) or a speech agent (RealtimeAgent), which announce the
same ``agent.*`` events.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from channels.db import database_sync_to_async

from voicecall.logsafe import sanitize

from .audio import FRAME_BYTES, MulawConverter, mulaw_to_wav_bytes, ulaw_decode
from .simulator import TwilioCall, TwilioStream, stream_urls

__all__ = ["ScriptError", "Step", "TurnReport", "load_script", "parse_script", "run_conversation", "synthesize"]

logger = logging.getLogger(__name__)

MAX_STEPS = 200
MAX_UTTERANCE_CHARS = 500
MAX_PAUSE_SECONDS = 60.0
#: How long after the caller stopped the agent's turn may take to start (speech to text on a busy machine).
TURN_START_TIMEOUT = 20.0
#: How long a reply may take from its turn's start to its end (it plays in real time).
REPLY_TIMEOUT = 90.0
#: A greeting starts playing within this long of the stream opening, or there is none.
GREETING_START_TIMEOUT = 3.0
POLL_SECONDS = 0.05
SILENCE_FRAME = b"\xff" * FRAME_BYTES
_DIRECTIVE = re.compile(r"^\[\s*(pause|dtmf)\s+([^\]]*?)\s*\]$", re.IGNORECASE)
_DTMF = re.compile(r"^[0-9*#]{1,20}$")


class ScriptError(ValueError):
    """The script cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Step:
    """One thing the caller does: ``pause`` seconds of silence, then say ``say`` or press ``dtmf`` (or neither)."""

    say: str = ""
    dtmf: str = ""
    pause: float = 0.0

    @property
    def is_turn(self) -> bool:
        return bool(self.say or self.dtmf)


# --- the script -------------------------------------------------------------------------------------


def load_script(path: str | Path) -> list[Step]:
    """The steps of a script file (UTF-8 text or JSON); ScriptError if it cannot be used, OSError if unreadable."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ScriptError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_script(text)


def parse_script(text: str) -> list[Step]:
    if text.lstrip().startswith("["):
        try:
            value = json.loads(text)
        except ValueError as exc:
            if not _DIRECTIVE.match(text.strip().splitlines()[0].strip()):
                raise ScriptError(f"it starts like JSON but is not: {exc}") from None
        else:
            return _checked(_json_steps(value))
    steps = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        found = _DIRECTIVE.match(line)
        if found is None:
            steps.append(_step(f"line {number}", say=line))
            continue
        kind, value = found.group(1).lower(), found.group(2)
        if kind == "pause":
            steps.append(_step(f"line {number}", pause=_seconds(f"line {number}", value)))
        else:
            steps.append(_step(f"line {number}", dtmf=value))
    return _checked(steps)


def _json_steps(value: Any) -> list[Step]:
    if not isinstance(value, list):
        raise ScriptError("a JSON script must be a list of steps")
    steps = []
    for index, entry in enumerate(value):
        where = f"step {index + 1}"
        if isinstance(entry, str):
            steps.append(_step(where, say=entry))
            continue
        if not isinstance(entry, dict):
            raise ScriptError(f"{where} must be a string or an object with say, dtmf or pause")
        unknown = set(entry) - {"say", "dtmf", "pause"}
        if unknown:
            raise ScriptError(f"{where} has unknown keys {sorted(map(str, unknown))} (say, dtmf, pause)")
        say, dtmf = entry.get("say", ""), entry.get("dtmf", "")
        if not isinstance(say, str) or not isinstance(dtmf, str):
            raise ScriptError(f"{where}: say and dtmf must be strings")
        pause = _seconds(where, entry.get("pause", 0))
        if say and dtmf:
            raise ScriptError(f"{where} has both say and dtmf: make them two steps")
        steps.append(_step(where, say=say, dtmf=dtmf, pause=pause))
    return steps


def _seconds(where: str, value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ScriptError(f"{where}: pause must be a number of seconds, not {sanitize(str(value), 40)!r}") from None
    if not 0 <= seconds <= MAX_PAUSE_SECONDS:
        raise ScriptError(f"{where}: pause must be 0 to {MAX_PAUSE_SECONDS:g} seconds, not {seconds:g}")
    return seconds


def _step(where: str, *, say: str = "", dtmf: str = "", pause: float = 0.0) -> Step:
    say = say.strip()
    if len(say) > MAX_UTTERANCE_CHARS:
        raise ScriptError(f"{where}: an utterance may have {MAX_UTTERANCE_CHARS} characters at most")
    if dtmf and not _DTMF.match(dtmf):
        raise ScriptError(f"{where}: dtmf must be keypad digits (0-9, * and #), not {sanitize(dtmf, 40)!r}")
    if not (say or dtmf or pause):
        raise ScriptError(f"{where} does nothing: give say, dtmf or a pause")
    return Step(say=say, dtmf=dtmf, pause=pause)


def _checked(steps: list[Step]) -> list[Step]:
    if not any(step.is_turn for step in steps):
        raise ScriptError("the script has no utterance and no keypress")
    if len(steps) > MAX_STEPS:
        raise ScriptError(f"the script has {len(steps)} steps; {MAX_STEPS} at most")
    return steps


async def synthesize(steps: list[Step]) -> list[bytes]:
    """Each step's utterance as 8 kHz mu-law (b"" for steps that say nothing), from the configured TTS backend.

    Raises what the backend raises (ImproperlyConfigured, TTSError, ...), or
    ScriptError when an utterance comes out without audio.
    """
    from .backends import backends

    out = []
    try:
        for index, step in enumerate(steps):
            if not step.say:
                out.append(b"")
                continue
            converter, audio = MulawConverter(), bytearray()
            async for chunk in backends.tts.synthesize(step.say):
                audio += converter.feed(chunk)
            audio += converter.flush()
            if not audio:
                raise ScriptError(f"step {index + 1}: the TTS backend produced no audio for {step.say!r}")
            audio += b"\xff" * ((-len(audio)) % FRAME_BYTES)
            out.append(bytes(audio))
    finally:
        await backends.aclose_all()  # before asyncio.run() closes the loop the backends opened on
    return out


# --- the caller's line ------------------------------------------------------------------------------


@dataclass
class Utterance:
    speech_end: asyncio.Future  # perf_counter when the frame holding the last speech went out
    done: asyncio.Future  # ... the last frame


def last_speech_frame(mulaw: bytes) -> int:
    """Index of the last 20 ms frame within 30 dB of the loudest one (speech ends there, not at the padding)."""
    count = len(mulaw) // FRAME_BYTES
    if count == 0:
        return 0
    x = ulaw_decode(mulaw[: count * FRAME_BYTES]).astype(np.float64).reshape(count, FRAME_BYTES)
    energy = (x**2).mean(axis=1)
    loud = np.nonzero(energy >= energy.max() * 1e-3)[0]
    return int(loud[-1]) if len(loud) else count - 1


class CallerLine:
    """Twilio's inbound track: a 20 ms frame every 20 ms on an absolute clock, silence unless the caller speaks."""

    def __init__(self, stream: TwilioStream) -> None:
        self.stream = stream
        self._queue: list[bytes] = []
        self._marks: dict[int, list[asyncio.Future]] = {}
        self._sent = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"caller-line:{self.stream.stream_sid}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def say(self, mulaw: bytes) -> Utterance:
        loop = asyncio.get_running_loop()
        frames = [mulaw[i : i + FRAME_BYTES].ljust(FRAME_BYTES, b"\xff") for i in range(0, len(mulaw), FRAME_BYTES)]
        base = self._sent + len(self._queue)
        utterance = Utterance(loop.create_future(), loop.create_future())
        self._marks.setdefault(base + last_speech_frame(mulaw), []).append(utterance.speech_end)
        self._marks.setdefault(base + len(frames) - 1, []).append(utterance.done)
        self._queue.extend(frames)
        return utterance

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            delay = start + self._sent * 0.02 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            frame = self._queue.pop(0) if self._queue else SILENCE_FRAME
            index, self._sent = self._sent, self._sent + 1
            at = time.perf_counter()
            for future in self._marks.pop(index, ()):
                if not future.done():
                    future.set_result(at)
            await self.stream.send_media(frame)


# --- the call's event log --------------------------------------------------------------------------


@dataclass(frozen=True)
class LoggedEvent:
    pk: int
    type: str
    payload: dict


class EventFeed:
    """The call's event-log rows as they are written (polled), and waits for one of a kind.

    The event log rather than the events group: it is shared with the server
    whatever its channel layer (the in-memory one included).
    """

    def __init__(self, call_sid: str) -> None:
        self.call_sid = call_sid
        self.items: list[LoggedEvent] = []
        self._task: asyncio.Task | None = None
        self._last_pk = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._poll(), name=f"event-feed:{self.call_sid}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.refresh()

    async def refresh(self) -> None:
        from voicecall.models import CallEvent

        rows = await database_sync_to_async(
            lambda: list(
                CallEvent.objects.filter(call__call_sid=self.call_sid, pk__gt=self._last_pk)
                .order_by("pk")
                .values_list("pk", "type", "payload")
            )
        )()
        for pk, kind, payload in rows:
            self.items.append(LoggedEvent(pk, kind, payload if isinstance(payload, dict) else {}))
            self._last_pk = pk

    async def _poll(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(POLL_SECONDS)

    def find(self, kinds: str | tuple[str, ...], since: int = 0, check: Callable[[dict], bool] | None = None):
        kinds = (kinds,) if isinstance(kinds, str) else kinds
        for event in self.items[since:]:
            if event.type in kinds and (check is None or check(event.payload)):
                return event
        return None

    def all(self, kind: str, since: int = 0, **data) -> list[dict]:
        return [
            e.payload
            for e in self.items[since:]
            if e.type == kind and all(e.payload.get(k) == v for k, v in data.items())
        ]

    async def wait(self, kinds, since: int, timeout: float, check=None, closed: asyncio.Event | None = None):
        """The first matching event at or after index ``since``; None on timeout or when ``closed`` is set (after a last look)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = self.find(kinds, since, check)
            if found is not None:
                return found
            if loop.time() >= deadline:
                return None
            if closed is not None and closed.is_set():
                await asyncio.sleep(0.3)  # the rows of the stream's last moments are still being written
                await self.refresh()
                return self.find(kinds, since, check)
            await asyncio.sleep(POLL_SECONDS)


# --- the conversation -------------------------------------------------------------------------------


@dataclass
class TurnReport:
    number: int
    step: Step
    caller_seconds: float = 0.0
    heard: str = ""
    reply: str = ""
    outcome: str = ""
    voice_to_voice_ms: float | None = None  # caller stopped -> first agent audio frame here (this process's clock)
    first_token_ms: float | None = None  # the event log's, after the turn started
    first_audio_ms: float | None = None
    finished_ms: float | None = None
    tools: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _show(text: str, limit: int = 200) -> str:
    return repr(sanitize(text or "", limit))


def _ms(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class Conversation:
    def __init__(self, stream: TwilioStream, feed: EventFeed, line: CallerLine, write: Callable[[str], None]) -> None:
        self.stream = stream
        self.feed = feed
        self.line = line
        self.write = write
        self.media_times: list[float] = []  # perf_counter of every agent media frame received
        self.last_turn = 0

    def on_message(self, message: dict, at: float) -> None:
        if message.get("event") == "media":
            self.media_times.append(at)
        elif message.get("event") == "clear":
            self.write("agent audio cleared (barge-in)")

    async def greeting(self) -> None:
        """If the agent greets, listen to the greeting before saying anything."""
        started = await self.feed.wait("playback.started", 0, GREETING_START_TIMEOUT, closed=self.stream.closed)
        if started is None:
            return
        item_id = started.payload.get("item_id")
        finished = await self.feed.wait(
            "playback.finished", 0, REPLY_TIMEOUT, lambda p: p.get("item_id") == item_id, closed=self.stream.closed
        )
        if finished is not None:
            self.write(f"agent greets: {_show(finished.payload.get('text', ''))} ({finished.payload.get('outcome')})")

    async def turn(self, number: int, step: Step, audio: bytes) -> TurnReport:
        report = TurnReport(number, step)
        since = len(self.feed.items)
        if step.say:
            report.caller_seconds = len(audio) / 8000
            self.write(f"turn {number}: caller says {_show(step.say)} ({report.caller_seconds:.1f} s)")
            utterance = self.line.say(audio)
            stopped = await utterance.speech_end
            await utterance.done
        else:
            self.write(f"turn {number}: caller presses {step.dtmf}")
            for digit in step.dtmf:
                await self.stream.send_dtmf(digit)
            stopped = time.perf_counter()
        closed = self.stream.closed
        started = await self.feed.wait(
            "agent.turn.started", since, TURN_START_TIMEOUT, lambda p: (p.get("turn_id") or 0) > self.last_turn, closed
        )
        if started is None:
            heard = self.feed.find("transcript.final", since)
            if heard is not None:
                report.heard = heard.payload.get("text", "")
                report.outcome = "no agent turn (is an agent configured on the server?)"
            else:
                report.outcome = "nothing heard (no transcript, no agent turn)"
            self.write(f"turn {number}: {report.outcome}")
            return report
        self.write(f"turn {number}: heard {_show(self._heard(started, since))}")
        while True:
            turn_id = started.payload["turn_id"]
            self.last_turn = turn_id
            ended = await self.feed.wait(
                ("agent.reply.finished", "agent.reply.cancelled"),
                since,
                REPLY_TIMEOUT,
                lambda p: p.get("turn_id") == turn_id,
                closed,
            )
            later = self.feed.find("agent.turn.started", since, lambda p: (p.get("turn_id") or 0) > turn_id)
            if ended is not None and ended.type == "agent.reply.cancelled" and later is not None:
                # The server took part of the utterance as a turn of its own (a pause mid-sentence).
                report.notes.append(f"turn {turn_id} cancelled: {ended.payload.get('reason')}")
                started = later
                self.write(f"turn {number}: {sanitize(report.notes[-1], 200)}; then heard {_show(self._heard(later, since))}")
                continue
            break
        self._fill(report, since, started, ended, stopped)
        self._print(report)
        return report

    def _fill(self, report: TurnReport, since: int, started, ended, stopped: float) -> None:
        turn_id = started.payload["turn_id"]
        report.heard = self._heard(started, since)
        token = self.feed.all("agent.first_token", since, turn_id=turn_id)
        audio = self.feed.all("agent.first_audio", since, turn_id=turn_id)
        report.first_token_ms = _ms(token[0].get("ms")) if token else None
        report.first_audio_ms = _ms(audio[0].get("ms")) if audio else None
        for called in self.feed.all("agent.tool.called", since, turn_id=turn_id):
            result = next(
                (r for r in self.feed.all("agent.tool.result", since, turn_id=turn_id) if r.get("call_id") == called.get("call_id")),
                None,
            )
            arguments = sanitize(json.dumps(called.get("arguments"), default=str), 120)
            outcome = "no result" if result is None else ("ok " + sanitize(str(result.get("output")), 120) if result.get("ok") else "error " + sanitize(str(result.get("error")), 120))
            report.tools.append(f"{sanitize(str(called.get('name')), 60)}({arguments}) -> {outcome}")
        first_frame = next((t for t in self.media_times if t > stopped), None)
        if first_frame is not None and audio:
            report.voice_to_voice_ms = (first_frame - stopped) * 1000
        if ended is None:
            report.outcome = "the call ended" if self.stream.closed.is_set() else f"no end of the reply within {REPLY_TIMEOUT:g} s"
            return
        report.finished_ms = _ms(ended.payload.get("ms"))
        if ended.type == "agent.reply.cancelled":
            report.outcome = f"cancelled: {ended.payload.get('reason')}"
            return
        report.reply = ended.payload.get("heard_text") or ended.payload.get("text") or ""
        report.outcome = "interrupted" if ended.payload.get("interrupted") else "finished"

    def _heard(self, started: LoggedEvent, since: int) -> str:
        heard = started.payload.get("text") or started.payload.get("dtmf") or ""
        if not heard:  # a speech agent: the caller's words come as a transcript, if at all
            final = self.feed.find("transcript.final", since)
            heard = final.payload.get("text", "") if final is not None else ""
        return heard

    def _print(self, report: TurnReport) -> None:
        n = report.number
        for tool in report.tools:
            self.write(f"turn {n}: tool {tool}")
        self.write(f"turn {n}: agent {_show(report.reply)} ({report.outcome})")
        parts = []
        if report.voice_to_voice_ms is not None:
            parts.append(f"caller stopped -> agent audio {report.voice_to_voice_ms:.0f} ms")
        timings = [
            f"{label} {value:.0f} ms"
            for label, value in (
                ("first token", report.first_token_ms),
                ("first audio", report.first_audio_ms),
                ("reply ended", report.finished_ms),
            )
            if value is not None
        ]
        if timings:
            parts.append("after the turn started: " + ", ".join(timings))
        if parts:
            self.write(f"turn {n}: latency: " + "; ".join(parts))


def summary(reports: list[TurnReport]) -> list[str]:
    """A table of the turns, and the voice-to-voice median and worst."""
    rows = [
        [
            str(r.number),
            sanitize(r.step.say or f"[dtmf {r.step.dtmf}]", 34),
            sanitize(r.heard, 34),
            sanitize(r.reply, 40),
            "-" if r.voice_to_voice_ms is None else f"{r.voice_to_voice_ms:.0f}",
            "-" if r.first_token_ms is None else f"{r.first_token_ms:.0f}",
            "-" if r.first_audio_ms is None else f"{r.first_audio_ms:.0f}",
            r.outcome.split(" (")[0][:40],
        ]
        for r in reports
    ]
    headers = ["turn", "caller", "heard", "agent", "v2v ms", "token ms", "audio ms", "outcome"]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    latencies = sorted(r.voice_to_voice_ms for r in reports if r.voice_to_voice_ms is not None)
    if latencies:
        median = statistics.median(latencies)
        lines.append(
            f"voice to voice (caller stopped -> first agent audio): median {median:.0f} ms, "
            f"worst {latencies[-1]:.0f} ms over {len(latencies)} answered turns"
        )
    return lines


async def run_conversation(
    steps: list[Step],
    audio: list[bytes],
    *,
    server: str,
    public_url: str,
    auth_token: str,
    from_number: str = "+15005550006",
    to_number: str = "+14155551212",
    out: str | None = None,
    write: Callable[[str], None] = print,
) -> list[TurnReport]:
    """Call ``server``, play the steps turn by turn, print each turn; returns the turns' reports."""
    call = TwilioCall(
        server_url=server, public_url=public_url, auth_token=auth_token, from_number=from_number, to_number=to_number
    )
    began = time.monotonic()

    def say(line: str) -> None:
        write(f"[{time.monotonic() - began:6.2f}s] {line}")

    instructions = await call.answer()
    say(f"call {call.call_sid}: TwiML asks for a stream at {instructions.url}")
    connect_url, signed_url = stream_urls(public_url, server, instructions.url)
    stream = TwilioStream(
        connect_url, signed_url=signed_url, auth_token=auth_token, call_sid=call.call_sid,
        account_sid=call.account_sid, parameters=instructions.parameters,
    )  # fmt: skip
    feed = EventFeed(call.call_sid)
    line = CallerLine(stream)
    conversation = Conversation(stream, feed, line, say)
    stream.on_message = conversation.on_message
    reports: list[TurnReport] = []
    await stream.connect()
    try:
        await stream.start()
        say(f"stream {stream.stream_sid} started")
        feed.start()
        line.start()
        await conversation.greeting()
        number = 0
        for step, mulaw in zip(steps, audio):
            if stream.closed.is_set():
                break
            if step.pause:
                await line.say(b"\xff" * int(step.pause * 8000)).done
            if not step.is_turn:
                continue
            number += 1
            reports.append(await conversation.turn(number, step, mulaw))
        if stream.closed.is_set():
            say(f"the server ended the stream ({stream.close_code})")
        else:
            await line.stop()
            await stream.stop()
            code = await stream.wait_closed(10)
            say(f"stream closed ({code})")
        await call.status("completed", CallDuration=str(int(time.monotonic() - began)))
    finally:
        await line.stop()
        await feed.stop()
        await stream.close()
    for text in summary(reports):
        write(text)
    if out:
        played = stream.agent_audio
        Path(out).write_bytes(mulaw_to_wav_bytes(played))
        say(f"wrote {len(played) / 8000:.1f}s of agent audio to {out}")
    return reports
