"""Barge-in latency: caller speech over a playing agent item -> ``clear`` on the socket.

    .venv/bin/python bench/barge_in.py                  # whisper + discard, K = 1 and 8, 30 trials each
    .venv/bin/python bench/barge_in.py --trials 40 --concurrency 1,4,8 --configs discard

For each transcription configuration a real daphne process serves the
project's own ASGI app (``settings.asgi``, production consumer) with the Redis
channel layer (a unique prefix) and its own PostgreSQL database (created,
migrated and dropped by this script). This process plays Twilio for K
concurrent calls (:mod:`mediastream.simulator`): every stream sends 20 ms
frames continuously on an absolute clock, digital silence unless a caller
clip (Piper speech, :mod:`tests.audio_fixtures`) is being spoken, and echoes
marks on a virtual playout clock.

One trial, per stream, in turn: ``aspeak`` a long item through Redis, wait for
its first media frame, wait 200-600 ms more, then speak a clip. Latency is
measured in this process with ``perf_counter`` from sending the frame that
holds the clip's speech onset (``SpeechClip.onset_ms``: first 10 ms within
30 dB of the loudest) to receiving ``clear``. Each trial also checks the
playback outcome (``interrupted`` / ``barge-in``, from the call's events
group), agent media leaking after ``clear``, and with Whisper waits for the
utterance's ``transcript.final`` before the next trial (a caller who speaks,
then listens).

Configurations:

* ``whisper``: the embedded default (Whisper base transcription + local VAD);
* ``discard``: the discard backend (local VAD only, no speech-to-text cost).

CPU per stream is the daphne process's utime+stime (all threads, from
``/proc/<pid>/stat``) over the measurement window, divided by K x the window
length: every stream is open and streaming for the whole window.

Theoretical floor: the VAD needs ``START_WINDOWS`` (2) consecutive 32 ms
windows of speech, i.e. 64 ms of audio, before it can fire, and the audio
arrives in real time. Silero often scores the quiet lead-in of a word as
speech, before the -30 dB "onset" used here, so single trials can come in
under that floor (the "VAD start" column shows where the VAD put the start).

The barge-in rule (``--rules``): ``BARGE_IN_MIN_SPEECH_SECONDS`` and
``BARGE_IN_MIN_WORDS`` let backchannels pass under the agent. With ``--rules
0,0.3s,0.6s,2w`` (one daphne per rule, Whisper + VAD, one stream) each rule gets
``--trials`` interruptions as above (their latency is what the rule costs) and
``--trials`` backchannels: "Uh-huh.", "Okay.", "Mm-hmm.", "Yeah." (Piper) and a
synthesized cough (a 250 ms burst of band-passed noise with a fast attack),
spoken over the playing item; a backchannel *stopped the reply* when ``clear``
arrived within 3 s (plus the rule's time) of the clip's end; interruptions
count as missed after that long too.

The script stops by itself (``--max-seconds``), and always stops its daphne,
drops its database and deletes its Redis keys.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import REDIS_URL, create_database, drop_database, key_json_pairs, log, redis_cleanup  # noqa: E402

SETTINGS = "tests.settings_live"

FRAME_MS = 20
VAD_WINDOW_MS = 32
START_WINDOWS = 2  # MEDIASTREAM["VAD"]["START_WINDOWS"]; read from the settings in main()
SILENCE_FRAME = b"\xff" * 160
CLK_TCK = os.sysconf("SC_CLK_TCK")

#: Target figures (ms) the table is checked against.
TARGET_P50_MS = 100.0
TARGET_P99_MS = 150.0

#: What callers say to interrupt (different first sounds: plosive, fricative, vowel, nasal).
TEXTS = ["Wait, stop.", "Hold on a second.", "Sorry, one question.", "No, that is wrong."]

#: What callers say under the agent without meaning to take the floor (plus a synthesized cough).
BACKCHANNELS = ["Uh-huh.", "Okay.", "Mm-hmm.", "Yeah."]
COUGH = "(cough)"

#: About 12 s of agent audio with the bench TTS (40 ms per character).
LONG_TEXT = ("Our opening hours are from noon until eleven in the evening, every day except Monday. " * 4)[:300]

CONFIGS = {
    "whisper": {"BACKEND": "mediastream.transcription.whisper.WhisperBackend", "OPTIONS": {}},
    "discard": {"BACKEND": "mediastream.transcription.discard.DiscardBackend", "OPTIONS": {}},
}
LABELS = {"whisper": "whisper base + VAD", "discard": "discard + VAD"}


# --- resources: database, Redis keys, process CPU -------------------------------------------------


def migrate(database_url: str, prefix: str) -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "CHANNEL_LAYER_PREFIX": prefix,
        "PYTHONPATH": str(ROOT),
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=300
    )


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    import numpy as np

    return float(np.percentile(values, q))


# --- one simulated caller ------------------------------------------------------------------------


class Log:
    """Timestamped messages in arrival order, and waits for one of a kind after an index."""

    def __init__(self, kind_of=lambda message: message.get("event")) -> None:
        self.items: list[tuple[float, dict]] = []
        self._kind_of = kind_of
        self._waiters: list[tuple[object, asyncio.Future]] = []

    def add(self, message: dict, at: float) -> None:
        self.items.append((at, message))
        for check, future in self._waiters:
            if not future.done() and check(message):
                future.set_result(len(self.items) - 1)

    def find(self, check, since: int) -> int | None:
        for index in range(since, len(self.items)):
            if check(self.items[index][1]):
                return index
        return None

    async def wait(self, kind: str, since: int, timeout: float, match=lambda message: True) -> int:
        """Index of the first ``kind`` message (that ``match``) at or after ``since``."""

        def check(message: dict) -> bool:
            return self._kind_of(message) == kind and match(message)

        found = self.find(check, since)
        if found is not None:
            return found
        entry = (check, asyncio.get_running_loop().create_future())
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(entry[1], timeout)
        finally:
            self._waiters.remove(entry)

    def count(self, kind: str, since: int) -> int:
        return sum(1 for _, m in self.items[since:] if self._kind_of(m) == kind)


@dataclass
class Said:
    onset: asyncio.Future  # perf_counter when the onset frame was sent
    end: asyncio.Future  # ... the frame holding the end of speech
    done: asyncio.Future  # ... the clip's last frame
    onset_stream_ms: int  # stream time of the onset


def mix(a: bytes, b: bytes) -> bytes:
    """Two mu-law frames added as PCM."""
    import numpy as np

    from mediastream.audio import ulaw_decode, ulaw_encode

    x = ulaw_decode(a).astype(np.int32) + ulaw_decode(b).astype(np.int32)
    return ulaw_encode(np.clip(x, -32768, 32767).astype(np.int16))


class Sender:
    """Twilio's inbound track: a 20 ms frame on an absolute clock, always; clips when told.

    Between clips it sends the line's background (``bed``: looped mu-law frames, or
    digital silence); clips are mixed over that background.
    """

    def __init__(self, stream, bed: list[bytes] | None = None) -> None:
        self.stream = stream
        self.bed = bed
        self.sent = 0  # index of the next frame to send (frames handed to the socket so far)
        self._script: deque[bytes] = deque()
        self._at: dict[int, list[asyncio.Future]] = {}
        self.lags: list[float] = []  # how late frames went out (s), when late
        self.sent_at: list[float] = []  # perf_counter of every frame sent, by stream frame index
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    def _background(self, index: int) -> bytes:
        return self.bed[index % len(self.bed)] if self.bed else SILENCE_FRAME

    def say(self, clip) -> Said:
        loop = asyncio.get_running_loop()
        base = self.sent + len(self._script)  # stream frame index of the clip's first frame
        frames = [clip.mulaw[i : i + 160].ljust(160, b"\xff") for i in range(0, len(clip.mulaw), 160)]
        if self.bed:
            frames = [mix(frame, self._background(base + k)) for k, frame in enumerate(frames)]
        said = Said(loop.create_future(), loop.create_future(), loop.create_future(), base * FRAME_MS + clip.onset_ms)
        for index, future in (
            (base + clip.onset_ms // FRAME_MS, said.onset),
            (base + (clip.end_ms - 1) // FRAME_MS, said.end),
            (base + len(frames) - 1, said.done),
        ):
            self._at.setdefault(index, []).append(future)
        self._script.extend(frames)
        return said

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            index = self.sent
            delay = start + index * FRAME_MS / 1000 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.005:
                self.lags.append(-delay)
            frame = self._script.popleft() if self._script else self._background(index)
            self.sent = index + 1  # before the await: say() during the send counts this frame
            at = time.perf_counter()
            self.sent_at.append(at)
            for future in self._at.pop(index, ()):
                if not future.done():
                    future.set_result(at)
            await self.stream.send_media(frame)


@dataclass
class Trial:
    text: str = ""  # what the caller said
    latency_ms: float | None = None  # onset frame sent -> clear received
    missed: bool = False  # no clear within the timeout
    early: bool = False  # clear before the onset went out (not caused by this speech)
    wrong_outcome: str = ""  # playback.finished not interrupted/barge-in
    leaked_frames: int = 0  # agent media after the clear
    vad_vs_onset_ms: int | None = None  # speech.started offset_ms - onset stream time
    react_ms: float | None = None  # frame completing the VAD's deciding window sent -> clear received
    final_ms: float | None = None  # end of speech sent -> transcript.final received (whisper)
    final_missing: bool = False
    backchannel: bool = False  # the clip was a backchannel (--rules)
    stopped: bool = False  # a backchannel that stopped the item


class Caller:
    def __init__(self, server_url: str, ws_url: str, layer, rng: random.Random, bed: list[bytes] | None) -> None:
        self.bed = bed
        self.server_url = server_url
        self.ws_url = ws_url
        self.layer = layer
        self.rng = rng
        self.events = Log()  # broadcasts on the call's events group
        self.tap = Log()  # what the server sent on the socket
        self.call = self.stream = self.sender = None
        self._channel = ""
        self._listener: asyncio.Task | None = None

    async def open(self) -> None:
        from django.conf import settings

        from mediastream.groups import events_group
        from mediastream.simulator import TwilioCall, TwilioStream

        token = settings.TWILIO_AUTH_TOKEN
        public = settings.TWILIO_PUBLIC_BASE_URL
        self.call = TwilioCall(server_url=self.server_url, public_url=public, auth_token=token)
        instructions = await self.call.answer()
        self._channel = await self.layer.new_channel("bench.events.")
        await self.layer.group_add(events_group(self.call.call_sid), self._channel)
        self._listener = asyncio.create_task(self._listen())
        self.stream = TwilioStream(
            self.ws_url,
            signed_url=instructions.url,
            auth_token=token,
            call_sid=self.call.call_sid,
            parameters=instructions.parameters,
        )
        self.stream.on_message = self.tap.add
        await self.stream.connect()
        await self.stream.start()
        # Commands reach the stream only once its consumer has registered its channel, which
        # happens after admission: wait for that, then start the inbound audio.
        await wait_joined(self.layer, self.call.call_sid)
        self.sender = Sender(self.stream, self.bed)
        self.sender.start()

    async def _listen(self) -> None:
        while True:
            message = await self.layer.receive(self._channel)
            self.events.add(message, time.perf_counter())

    async def trial(self, clip, *, wait_final: bool, clear_timeout: float = 3.0) -> Trial:
        from mediastream.api import aspeak

        result = Trial(text=clip.text)
        events_since = len(self.events.items)
        since = len(self.tap.items)
        item_id = await aspeak(self.call.call_sid, LONG_TEXT)
        first_media = await self.tap.wait("media", since, timeout=10)
        await asyncio.sleep(self.rng.uniform(0.2, 0.6))  # deliberate: speech lands anywhere in the item
        said = self.sender.say(clip)
        onset_at = await said.onset
        try:
            cleared = await self.tap.wait("clear", first_media, timeout=clear_timeout)
        except TimeoutError:
            result.missed = True
            cleared = None
        if cleared is not None:
            clear_at = self.tap.items[cleared][0]
            result.early = clear_at < onset_at
            result.latency_ms = (clear_at - onset_at) * 1000
        try:
            index = await self.events.wait(
                "playback.finished", events_since, 10, lambda m: m["data"].get("item_id") == item_id
            )
            finished = self.events.items[index][1]["data"]
            if finished.get("outcome") != "interrupted" or finished.get("reason") != "barge-in":
                result.wrong_outcome = f"{finished.get('outcome')}/{finished.get('reason')}"
        except TimeoutError:
            result.wrong_outcome = "no playback.finished"
        end_at = await said.end
        await said.done
        if wait_final:
            try:
                index = await self.events.wait("transcript.final", events_since, 30)
                result.final_ms = (self.events.items[index][0] - end_at) * 1000
            except TimeoutError:
                result.final_missing = True
        if cleared is not None:
            result.leaked_frames = self.tap.count("media", cleared + 1)
        started = self.events.find(lambda m: m.get("event") == "speech.started", events_since)
        if started is not None:
            data = self.events.items[started][1]["data"]
            offset = data.get("offset_ms")
            if isinstance(offset, int) and data.get("source") == "vad":
                result.vad_vs_onset_ms = offset - said.onset_stream_ms
                # The VAD decided at the end of its START_WINDOWS-th window: the frame holding that
                # window's last sample is the one whose arrival triggered the barge-in.
                decided_ms = offset + START_WINDOWS * VAD_WINDOW_MS
                frame = (decided_ms * 8 - 1) // 160
                if cleared is not None and not result.early and frame < len(self.sender.sent_at):
                    result.react_ms = (self.tap.items[cleared][0] - self.sender.sent_at[frame]) * 1000
        return result

    async def backchannel(self, clip, *, settle_s: float) -> Trial:
        """Speak ``clip`` over a playing item; did it stop it? The item is then interrupted by hand."""
        from mediastream.api import ainterrupt, aspeak

        result = Trial(text=clip.text, backchannel=True)
        events_since, since = len(self.events.items), len(self.tap.items)
        await aspeak(self.call.call_sid, LONG_TEXT)
        first_media = await self.tap.wait("media", since, timeout=10)
        await asyncio.sleep(self.rng.uniform(0.2, 0.6))  # deliberate: speech lands anywhere in the item
        said = self.sender.say(clip)
        await said.done
        await asyncio.sleep(settle_s)  # deliberate: the rule's timer and the utterance's final have come by then
        result.stopped = self.tap.find(lambda m: m.get("event") == "clear", first_media) is not None
        if not result.stopped:
            await ainterrupt(self.call.call_sid)
            await self.tap.wait("clear", first_media, timeout=10)
        await self.events.wait("playback.finished", events_since, 10)
        return result

    async def hang_up(self) -> None:
        from mediastream.groups import events_group

        if self.sender is not None:
            await self.sender.stop()
        if self.stream is not None:
            await self.stream.close()
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        if self._channel:
            await self.layer.group_discard(events_group(self.call.call_sid), self._channel)


async def wait_joined(layer, call_sid: str, timeout: float = 10.0) -> None:
    """Until a consumer has registered its channel as the call's (``mediastream.directory``)."""
    from mediastream.directory import for_layer

    directory = for_layer(layer)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await directory.lookup(call_sid) is None:
        if loop.time() > deadline:
            raise RuntimeError(f"no consumer registered for {call_sid} within {timeout:g}s")
        await asyncio.sleep(0.01)


async def wait_streams_stopped(stream_sids: list[str], timeout: float = 60.0) -> bool:
    """Until the server has torn down (and recorded) every stream: the next window starts clean."""
    from channels.db import database_sync_to_async

    from voicecall.models import MediaStream

    @database_sync_to_async
    def open_count() -> int:
        return MediaStream.objects.filter(stream_sid__in=stream_sids, stopped_at__isnull=True).count()

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await open_count() == 0:
            return True
        await asyncio.sleep(0.1)
    return False


# --- one configuration, one concurrency ---------------------------------------------------------------


@dataclass
class Row:
    config: str
    k: int
    rule: str | None = None
    trials: list[Trial] = field(default_factory=list)
    window_s: float = 0.0
    daphne_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    client_late_frames: int = 0
    client_max_lag_ms: float = 0.0


async def run_k(
    config: str, k: int, trials: int, port: int, pid: int, layer, clips, bed, seed: int, backchannels=(), settle_s=0.0
) -> Row:
    rng = random.Random(seed)
    http, ws = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/twilio/media-stream/"
    callers = [Caller(http, ws, layer, random.Random(rng.random()), bed) for _ in range(k)]
    per_stream = [trials // k + (1 if i < trials % k else 0) for i in range(k)]
    row = Row(config, k)
    try:
        for caller in callers:
            await caller.open()
        cpu0, client0, t0 = cpu_seconds(pid), time.process_time(), time.monotonic()

        async def run(caller: Caller, count: int, index: int) -> list[Trial]:
            await asyncio.sleep(caller.rng.uniform(0, 1.5))  # deliberate: streams out of step
            out = []
            for n in range(count):
                clip = clips[(index + n) % len(clips)]
                out.append(await caller.trial(clip, wait_final=config == "whisper", clear_timeout=3.0 + settle_s))
                if backchannels:
                    other = backchannels[(index + n) % len(backchannels)]
                    out.append(await caller.backchannel(other, settle_s=settle_s))
            return out

        results = await asyncio.gather(*(run(c, n, i) for i, (c, n) in enumerate(zip(callers, per_stream))))  # noqa: B023
        row.window_s = time.monotonic() - t0
        row.daphne_cpu_s = cpu_seconds(pid) - cpu0
        row.client_cpu_s = time.process_time() - client0
        row.trials = [t for r in results for t in r]
        lags = [lag for c in callers for lag in c.sender.lags]
        row.client_late_frames = len(lags)
        row.client_max_lag_ms = max(lags, default=0.0) * 1000
    finally:
        for caller in callers:
            await caller.hang_up()
        sids = [c.stream.stream_sid for c in callers if c.stream is not None]
        if not await wait_streams_stopped(sids):
            log("some streams were not recorded as stopped within 60 s")
    return row


async def warm_up(config: str, port: int, layer, clip, bed) -> None:
    """Load the VAD model (and Whisper's) and open the database connections: not measured."""
    http, ws = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/twilio/media-stream/"
    caller = Caller(http, ws, layer, random.Random(0), bed)
    try:
        await caller.open()
        await caller.trial(clip, wait_final=config == "whisper")
    finally:
        await caller.hang_up()
        await wait_streams_stopped([caller.stream.stream_sid] if caller.stream else [])


async def run_config(
    config: str, args, database_url: str, prefix: str, logdir: Path, clips, bed, rule: str | None = None, backchannels=()
) -> list[Row]:
    from channels.layers import get_channel_layer

    from tests.live import daphne_server

    overrides = {
        "TTS": {
            "BACKEND": "mediastream.tts.dummy.ConstantBackend",
            "OPTIONS": {"VALUE": 3000, "SAMPLE_RATE": 8000, "MS_PER_CHAR": 40, "MIN_MS": 600},
        },
        "TRANSCRIPTION": CONFIGS[config],
        "MAX_PENDING_CONNECTIONS_PER_IP": 256,
        "MAX_PENDING_CONNECTIONS": 256,
    }
    settle_s = 0.0
    if rule is not None:
        speech_s, words = parse_rule(rule)
        overrides.update(BARGE_IN_MIN_SPEECH_SECONDS=speech_s, BARGE_IN_MIN_WORDS=words)
        settle_s = 3.0 + speech_s
    overrides.update(key_json_pairs(args.override))
    log_path = logdir / f"daphne-{config}{'-' + rule if rule else ''}.log"
    server = daphne_server(
        database_url=database_url,
        redis_url=REDIS_URL,
        prefix=prefix,
        overrides=overrides,
        log_path=log_path,
        extra_env={"LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING")},
    )
    port, proc = await asyncio.to_thread(server.__enter__)
    rows = []
    try:
        layer = get_channel_layer()
        log(f"{config}: daphne pid {proc.pid} on port {port}; warming up")
        await warm_up(config, port, layer, clips[0], bed)
        for k in args.concurrency:
            log(f"{config}: K={k}, {args.trials} trials")
            row = await run_k(
                config, k, args.trials, port, proc.pid, layer, clips, bed, seed=args.seed + k,
                backchannels=backchannels, settle_s=settle_s,
            )  # fmt: skip
            row.rule = rule
            rows.append(row)
            print_row_summary(row)
    except BaseException:
        tail = log_path.read_text(errors="replace").splitlines()[-30:] if log_path.exists() else []
        log("daphne log tail:\n" + "\n".join(tail))
        raise
    finally:
        await asyncio.to_thread(server.__exit__, None, None, None)
    return rows


# --- output ------------------------------------------------------------------------------------------


def fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def summarise(row: Row) -> dict:
    backchannels = [t for t in row.trials if t.backchannel]
    row = Row(row.config, row.k, row.rule, [t for t in row.trials if not t.backchannel], row.window_s, row.daphne_cpu_s,
              row.client_cpu_s, row.client_late_frames, row.client_max_lag_ms)  # fmt: skip
    latencies = [t.latency_ms for t in row.trials if t.latency_ms is not None and not t.early]
    vad = [t.vad_vs_onset_ms for t in row.trials if t.vad_vs_onset_ms is not None]
    finals = [t.final_ms for t in row.trials if t.final_ms is not None]
    react = [t.react_ms for t in row.trials if t.react_ms is not None]
    stream_seconds = row.k * row.window_s
    return {
        "n": len(row.trials),
        "p50": percentile(latencies, 50),
        "p90": percentile(latencies, 90),
        "p99": percentile(latencies, 99),
        "min": min(latencies, default=None),
        "max": max(latencies, default=None),
        "missed": sum(t.missed for t in row.trials),
        "early": sum(t.early for t in row.trials),
        "wrong": sum(bool(t.wrong_outcome) for t in row.trials),
        "leaked": sum(t.leaked_frames for t in row.trials),
        "vad": percentile(vad, 50),
        "react50": percentile(react, 50),
        "react99": percentile(react, 99),
        "final": percentile(finals, 50),
        "final_missing": sum(t.final_missing for t in row.trials),
        "cpu_stream": 100 * row.daphne_cpu_s / stream_seconds if stream_seconds else None,
        "cpu_total": 100 * row.daphne_cpu_s / row.window_s if row.window_s else None,
        "client_cpu": 100 * row.client_cpu_s / row.window_s if row.window_s else None,
        "backchannels": len(backchannels),
        "stopped": sum(t.stopped for t in backchannels),
        "stopped_by": {text: sum(t.stopped for t in backchannels if t.text == text) for text in dict.fromkeys(t.text for t in backchannels)},
        "per_clip": {text: sum(1 for t in backchannels if t.text == text) for text in dict.fromkeys(t.text for t in backchannels)},
    }


def print_row_summary(row: Row) -> None:
    s = summarise(row)
    log(
        f"  {row.config} K={row.k}: p50 {fmt(s['p50'])} ms, p99 {fmt(s['p99'])} ms over {s['n']} trials "
        f"(missed {s['missed']}, early {s['early']}), daphne CPU {fmt(s['cpu_total'])}% "
        f"({fmt(s['cpu_stream'], '.1f')}% per stream); client: {row.client_late_frames} frames sent >5 ms late, "
        f"max {row.client_max_lag_ms:.0f} ms"
    )
    problems = [t.wrong_outcome for t in row.trials if t.wrong_outcome]
    if problems:
        log(f"  unexpected playback outcomes: {problems}")


def table(rows: list[Row]) -> str:
    headers = [
        "config", "K", "n", "p50 ms", "p90 ms", "p99 ms", "min", "max", "miss", "early", "bad", "leak",
        "VAD start-onset ms", "react p50/p99", "final ms p50", "CPU %/stream", "daphne CPU %", "client CPU %",
        "client late", "target",
    ]  # fmt: skip
    lines = []
    for row in rows:
        s = summarise(row)
        ok = (
            s["p50"] is not None
            and s["p50"] < TARGET_P50_MS
            and s["p99"] < TARGET_P99_MS
            and not (s["missed"] or s["early"] or s["wrong"] or s["leaked"])
        )
        react = f"{fmt(s['react50'], '.1f')}/{fmt(s['react99'], '.1f')}"
        final = fmt(s["final"]) + (f" ({s['final_missing']} lost)" if s["final_missing"] else "")
        lines.append(
            [
                LABELS[row.config], str(row.k), str(s["n"]), fmt(s["p50"]), fmt(s["p90"]), fmt(s["p99"]),
                fmt(s["min"]), fmt(s["max"]), str(s["missed"]), str(s["early"]), str(s["wrong"]), str(s["leaked"]),
                fmt(s["vad"], "+.0f"), react, final,
                fmt(s["cpu_stream"], ".1f"), fmt(s["cpu_total"], ".0f"), fmt(s["client_cpu"], ".0f"),
                f"{row.client_late_frames}/{row.client_max_lag_ms:.0f}ms",
                "ok" if ok else "MISSED",
            ]
        )  # fmt: skip
    return render(headers, lines)


LEGEND = """\
miss: no clear within 3 s; early: clear before the onset was sent; bad: playback outcome not interrupted/barge-in;
leak: agent frames after clear; VAD start-onset: median of speech.started offset_ms minus the -30 dB onset
(negative: the VAD put the start earlier); react: from sending the frame that completed the VAD's deciding window
to receiving clear (server + loopback time); final: end of speech sent -> transcript.final received;
CPU %/stream: daphne utime+stime / (K x window), 100 = one core; client CPU: this process (it shares the machine);
client late: frames this process sent > 5 ms after their time / the worst delay."""


def parse_rule(rule: str) -> tuple[float, int]:
    """"0" (at once), "0.3s" (BARGE_IN_MIN_SPEECH_SECONDS), "2w" (BARGE_IN_MIN_WORDS) -> (seconds, words)."""
    if rule in ("0", "default"):
        return 0.0, 0
    if rule.endswith("s"):
        return float(rule[:-1]), 0
    if rule.endswith("w"):
        return 0.0, int(rule[:-1])
    raise ValueError(f"a rule is 0, <seconds>s or <words>w, not {rule!r}")


def rules_table(rows: list[Row]) -> str:
    headers = ["rule", "n", "barge-in p50 ms", "p90", "p99", "miss", "backchannels that stopped it", "by clip"]
    lines = []
    for row in rows:
        s = summarise(row)
        seconds, words = parse_rule(row.rule or "0")
        name = "at once (default)" if not (seconds or words) else (f"{seconds:g} s of speech" if seconds else f"{words} words")
        by = ", ".join(f"{text} {s['stopped_by'][text]}/{n}" for text, n in s["per_clip"].items())
        lines.append([name, str(s["n"]), fmt(s["p50"]), fmt(s["p90"]), fmt(s["p99"]), str(s["missed"]),
                      f"{s['stopped']}/{s['backchannels']}", by])  # fmt: skip
    return render(headers, lines)


def cough_clip(seed: int = 3):
    """A synthesized cough: 250 ms of band-passed noise (300-2500 Hz) with a fast attack and decay, 8 kHz mu-law."""
    import numpy as np
    import soxr

    from mediastream.audio import ulaw_encode
    from tests.audio_fixtures import SpeechClip, silence

    rate = 16000
    n = rate * 250 // 1000
    noise = np.random.default_rng(seed).standard_normal(n)
    spectrum = np.fft.rfft(noise)
    freqs = np.fft.rfftfreq(n, 1 / rate)
    spectrum[(freqs < 300) | (freqs > 2500)] = 0
    burst = np.fft.irfft(spectrum, n)
    t = np.arange(n) / rate
    burst *= np.minimum(1.0, t / 0.015) * np.exp(-t / 0.08)
    burst = burst / np.abs(burst).max() * 0.5 * 32767
    pcm = soxr.resample(burst.astype(np.float32), rate, 8000).astype(np.int16)
    audio = silence(200) + ulaw_encode(pcm) + silence(800)
    return SpeechClip(text=COUGH, mulaw=audio, onset_ms=200, end_ms=200 + 250)


def render(headers: list[str], lines: list[list[str]]) -> str:
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    out = ["  ".join(h.rjust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in lines]
    return "\n".join(out)


def by_clip(rows: list[Row]) -> str:
    """Latency per caller sentence (all K together): how much the first sound of a word matters."""
    lines = []
    for config in dict.fromkeys(row.config for row in rows):
        trials = [t for row in rows if row.config == config for t in row.trials]
        for text in dict.fromkeys(t.text for t in trials):
            mine = [t for t in trials if t.text == text]
            latencies = [t.latency_ms for t in mine if t.latency_ms is not None and not t.early]
            vad = [t.vad_vs_onset_ms for t in mine if t.vad_vs_onset_ms is not None]
            lines.append(
                [
                    LABELS[config], text, str(len(mine)), fmt(percentile(latencies, 50)),
                    fmt(max(latencies, default=None)), fmt(percentile(vad, 50), "+.0f"),
                ]
            )  # fmt: skip
    return render(["config", "caller said", "n", "p50 ms", "max ms", "VAD start-onset ms"], lines)


# --- main -----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="whisper,discard", help="comma-separated: whisper, discard")
    parser.add_argument("--concurrency", default="1,8", help="comma-separated K values (concurrent streams)")
    parser.add_argument("--trials", type=int, default=30, help="trials per configuration and K (over the K streams)")
    parser.add_argument(
        "--line",
        choices=["noise", "silence"],
        default="noise",
        help="the caller's line between and under the clips: white noise (default) or digital silence",
    )
    parser.add_argument("--noise-dbfs", type=float, default=-50.0, help="line noise level (RMS dBFS)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=1200.0, help="give up (and clean up) after this long")
    parser.add_argument("--keep-logs", action="store_true", help="keep the daphne logs (path printed at the end)")
    parser.add_argument(
        "--override", action="append", default=[], help="KEY=JSON: a MEDIASTREAM setting of the server (repeatable)"
    )
    parser.add_argument(
        "--rules", default="",
        help="barge-in rules to compare (Whisper, K=1): 0 (at once), <s>s (MIN_SPEECH_SECONDS), <n>w (MIN_WORDS)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = set(args.configs) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown config(s): {', '.join(sorted(unknown))}")
    args.concurrency = [int(k) for k in args.concurrency.split(",") if k.strip()]
    args.rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    for rule in args.rules:
        try:
            parse_rule(rule)
        except ValueError as exc:
            parser.error(str(exc))
    if args.rules:
        args.configs, args.concurrency = ["whisper"], [1]
    if args.trials < 1 or any(k < 1 for k in args.concurrency):
        parser.error("--trials and every K must be >= 1")
    return args


async def run_all(args, database_url: str, prefix: str, logdir: Path, clips, bed) -> list[Row]:
    rows = []
    if args.rules:
        backchannels = [speech_clip_for(text) for text in BACKCHANNELS] + [cough_clip()]
        for rule in args.rules:
            rows += await run_config("whisper", args, database_url, prefix, logdir, clips, bed, rule, backchannels)
        return rows
    for config in args.configs:
        rows += await run_config(config, args, database_url, prefix, logdir, clips, bed)
    return rows


def speech_clip_for(text: str):
    from tests.audio_fixtures import speech_clip

    return speech_clip(text, lead_ms=200, tail_ms=800)


class OutOfTime(Exception):
    pass


async def bounded(args, *params) -> list[Row]:
    budget = asyncio.timeout(args.max_seconds)
    try:
        async with budget:
            return await run_all(args, *params)
    except TimeoutError:
        if budget.expired():
            raise OutOfTime() from None
        raise  # a wait inside the run gave up: a real failure


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = f"{os.getpid()}x{secrets.token_hex(3)}"
    prefix = f"bench-bargein-{run}-"  # unique: the Redis keys of this run, and only those, start with it
    db_name = f"bench_bargein_{run}"
    logdir = Path(tempfile.mkdtemp(prefix="bench-bargein-"))
    started = time.monotonic()
    rows: list[Row] = []
    try:
        log(f"database {db_name}, channel-layer prefix {prefix}")
        database_url = create_database(db_name)
        migrate(database_url, prefix)
        os.environ.update(
            DJANGO_SETTINGS_MODULE=SETTINGS, DATABASE_URL=database_url, REDIS_URL=REDIS_URL, CHANNEL_LAYER_PREFIX=prefix
        )
        os.environ.setdefault("LOG_LEVEL", "WARNING")  # this process's logging (httpx logs every webhook at INFO)
        import django

        django.setup()
        from mediastream.conf import app_settings
        from tests.audio_fixtures import frames, speech_clip, white_noise

        global START_WINDOWS
        START_WINDOWS = int(app_settings.VAD["START_WINDOWS"])  # the daphne child reads the same settings

        log(f"making {len(TEXTS)} caller clips with Piper")
        clips = [speech_clip(text, lead_ms=200, tail_ms=800) for text in TEXTS]
        bed = None if args.line == "silence" else frames(white_noise(10_000, dbfs=args.noise_dbfs, seed=7))
        rows = asyncio.run(bounded(args, database_url, prefix, logdir, clips, bed))
    except OutOfTime:
        log(f"stopped after --max-seconds {args.max_seconds:g}")
    finally:
        drop_database(db_name)
        removed = redis_cleanup(prefix)
        log(f"cleaned up: database {db_name} dropped, {removed} Redis keys deleted")
        if args.keep_logs:
            log(f"daphne logs in {logdir}")
        else:
            for path in logdir.iterdir():
                path.unlink()
            logdir.rmdir()
    if not rows:
        return 1
    print()
    line = "digital silence" if args.line == "silence" else f"white noise at {args.noise_dbfs:g} dBFS"
    print(f"Barge-in latency: speech onset frame sent -> clear received ({args.trials} trials per row; line: {line})")
    print(
        f"targets: p50 < {TARGET_P50_MS:.0f} ms, p99 < {TARGET_P99_MS:.0f} ms; "
        f"floor: {START_WINDOWS} VAD windows x {VAD_WINDOW_MS} ms = {START_WINDOWS * VAD_WINDOW_MS} ms of speech"
    )
    print(table(rows))
    print(LEGEND)
    print()
    print(by_clip(rows))
    if args.rules:
        print()
        print("The barge-in rule: interruptions' latency, and backchannels spoken under the item that stopped it")
        print(rules_table(rows))
    print(f"total {time.monotonic() - started:.0f} s; {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
