"""Voice-to-voice latency: the caller's last speech frame -> the agent's first audio frame on the socket.

    .venv/bin/python bench/voice_to_voice.py                           # every configuration, 30 turns each
    .venv/bin/python bench/voice_to_voice.py --configs vendors-elevenlabs --turns 100

For each configuration a real daphne process serves the project
(``settings.asgi``, the production consumer, ``tests.settings_live``: the
Redis channel layer under a prefix of the run's own, a PostgreSQL database
of its own, created, migrated and dropped). This process plays Twilio for one
call at a time (:mod:`mediastream.simulator`: 20 ms frames on an absolute
clock, marks echoed on a virtual playout clock), listens on the call's events
group, and runs the fake vendors the daphne process talks to on loopback:
``FakeChatCompletions`` (tests/vendors_agent), answering at once, behind
``ChatCompletionsAgent(BASE_URL=...)``, and for the vendor configurations the
fake Deepgram (tests/vendors_stt) and the fake ElevenLabs / OpenAI TTS
(tests/vendors).

Configurations:

* ``embedded-chat``: the embedded speech (Whisper, Piper) and the local fake
  model. The caller speaks Piper clips (:func:`tests.audio_fixtures.speech_clip`)
  in real time over white line noise (-50 dBFS, as bench/barge_in.py);
* ``embedded-scripted``: the same with ``ScriptedAgent`` (no HTTP at all);
* ``vendors-elevenlabs`` / ``vendors-openai``: the fake Deepgram sends
  ``SpeechStarted``, then 300 ms later the final (``speech_final``) when this
  script says; TTS from the fake ElevenLabs (``ulaw_8000``) or OpenAI (24 kHz
  PCM, resampled) server. What the project adds on top of the vendors' own
  time is the vendor final sent -> first agent frame received, minus the fake
  TTS's own time to its first chunk (request received -> first chunk written,
  timed inside the fake). The fake model's own time (request -> its last
  token written) is printed and left in: it is what "answers at once" costs.

One turn: the caller speaks (or the fake Deepgram sends a final), the reply
is waited for to its end (``agent.reply.finished``), a 0.3-0.8 s pause, the
next turn. The first turn of each configuration warms up (Piper's worker,
connection pools) and is not counted.

Stages, per turn (all on this process's ``perf_counter`` unless said):

* **end of turn**: last speech frame sent -> the frame that completed the VAD's
  hang time (``transcript.final``'s ``end_ms`` + ``END_SILENCE_SECONDS`` in
  32 ms windows, mapped to the frame that carried it). Embedded only;
* **STT**: from there (vendors: from the final sent) to the turn's start;
* **first token**: ``agent.first_token.ms`` (the server's clock, from the turn's start);
* **TTS**: ``agent.first_audio.ms - agent.first_token.ms``: the first sentence
  synthesized and its first frame sent;
* **send**: that frame leaving the server -> received here. The server's
  instant is not on this clock: it is estimated as the events group's lag
  (``speech.started`` received here minus the moment the frame that decided it
  was sent, median of the run) subtracted from the ``agent.first_audio``
  message's arrival; the turn's start is then first frame received - send -
  first audio ms, so the stages add up to the total.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.barge_in import Caller, cpu_seconds, migrate, percentile, render, wait_streams_stopped  # noqa: E402
from bench.common import REDIS_URL, child_pids, create_database, drop_database, log, redis_cleanup  # noqa: E402

FRAME_MS = 20
VAD_WINDOW_MS = 32

#: Targets (ms).
TARGET_EMBEDDED_P50 = 700.0
TARGET_EMBEDDED_P99 = 1000.0
TARGET_PROJECT_P99 = 50.0

#: What callers say (different lengths and endings).
TEXTS = [
    "What time do you open tomorrow?",
    "I would like to book a table for four people.",
    "Can I bring my dog?",
    "Do you have any vegetarian dishes on the menu?",
    "Is there parking nearby?",
]

#: The agent's answer: a short first sentence (Piper's time to first audio grows with its length), then more.
REPLY = "Sure, I can help you with that. Anything else?"

CONFIGS = ("embedded-chat", "embedded-scripted", "vendors-elevenlabs", "vendors-openai")
PIPER = {"BACKEND": "mediastream.tts.piper.PiperBackend", "OPTIONS": {}}
WHISPER = {"BACKEND": "mediastream.transcription.whisper.WhisperBackend", "OPTIONS": {}}
KEY = "sk-test-key"


# --- the fake vendors, timed from the inside --------------------------------------------------------------


def timed_chat(reply: str):
    """FakeChatCompletions that answers ``reply`` at once and notes each request's time inside it."""
    from tests.vendors_agent import FakeChatCompletions, Reply

    class TimedChat(FakeChatCompletions):
        def __init__(self) -> None:
            super().__init__(api_key=KEY, respond=lambda body: Reply(text=reply))
            self.spans: list[tuple[float, float]] = []  # (request handled from, last token written)

        async def _completions(self, request):
            began = time.perf_counter()
            response = await super()._completions(request)
            self.spans.append((began, time.perf_counter()))
            return response

    return TimedChat()


def timed_tts(kind: str):
    """The fake ElevenLabs or OpenAI TTS, noting (request handled from, first chunk written) per request."""
    from aiohttp import web

    from tests.vendors import FakeElevenLabsTTS, FakeOpenAISpeech

    base = FakeElevenLabsTTS if kind == "elevenlabs" else FakeOpenAISpeech

    class TimedTTS(base):
        def __init__(self) -> None:
            super().__init__(api_key="xi-test-key" if kind == "elevenlabs" else KEY)
            self.firsts: list[tuple[float, float]] = []

        async def _stream(self, request):
            request["bench_began"] = time.perf_counter()
            return await super()._stream(request)

        async def _speech(self, request):
            request["bench_began"] = time.perf_counter()
            return await super()._speech(request)

        async def stream_audio(self, request, audio, content_type):
            response = web.StreamResponse(status=200, headers={"Content-Type": content_type})
            response.enable_chunked_encoding()
            await response.prepare(request)
            for offset in range(0, len(audio), self.chunk_size):
                await response.write(audio[offset : offset + self.chunk_size])
                if offset == 0:
                    self.firsts.append((request.get("bench_began", time.perf_counter()), time.perf_counter()))
            await response.write_eof()
            return response

    return TimedTTS()


# --- one configuration ----------------------------------------------------------------------------------


@dataclass
class Turn:
    text: str = ""
    total_ms: float | None = None  # last speech frame (vendors: final sent) -> first agent frame received
    eot_ms: float | None = None
    stt_ms: float | None = None
    token_ms: float | None = None
    tts_ms: float | None = None
    send_ms: float | None = None
    vendor_tts_ms: float | None = None  # the fake TTS's own request -> first chunk
    vendor_llm_ms: float | None = None  # the fake model's own request -> last token
    project_ms: float | None = None  # total - vendor TTS (vendors configurations)
    fa_ms: float = 0.0  # agent.first_audio.ms
    heard: str = ""
    problem: str = ""
    # raw, for the send estimate after the run
    media_rx: float = 0.0
    first_audio_rx: float = 0.0
    decision_at: float | None = None
    origin: float = 0.0  # last speech frame sent / final sent


@dataclass
class Run:
    config: str
    turns: list[Turn] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)  # events-group lag samples (s)
    window_s: float = 0.0
    cpu_s: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)


def agent_config(config: str, chat_url: str | None) -> dict:
    if config == "embedded-scripted":
        return {"BACKEND": "mediastream.agents.scripted.ScriptedAgent", "OPTIONS": {"FALLBACK": REPLY}}
    return {
        "BACKEND": "mediastream.agents.openai.ChatCompletionsAgent",
        "OPTIONS": {"API_KEY": KEY, "BASE_URL": chat_url, "MODEL": "fake-instant"},
    }


def overrides_for(config: str, chat_url: str | None, stt_url: str | None, tts_url: str | None) -> dict:
    overrides = {"AGENT": agent_config(config, chat_url), "MAX_PENDING_CONNECTIONS_PER_IP": 64}
    if config.startswith("embedded"):
        return {**overrides, "TTS": PIPER, "TRANSCRIPTION": WHISPER}
    overrides["TRANSCRIPTION"] = {
        "BACKEND": "mediastream.transcription.deepgram.DeepgramBackend",
        "OPTIONS": {"API_KEY": "dg-test-key", "URL": stt_url},
    }
    if config == "vendors-elevenlabs":
        overrides["TTS"] = {
            "BACKEND": "mediastream.tts.elevenlabs.ElevenLabsBackend",
            "OPTIONS": {"VOICE_ID": "bench-voice", "API_KEY": "xi-test-key", "BASE_URL": tts_url},
        }
    else:
        overrides["TTS"] = {"BACKEND": "mediastream.tts.openai.OpenAIBackend", "OPTIONS": {"API_KEY": KEY, "BASE_URL": tts_url}}
    return overrides


async def _either(log_, kinds: tuple[str, ...], since: int, timeout: float, match) -> int | None:
    waits = [asyncio.ensure_future(log_.wait(kind, since, timeout, match)) for kind in kinds]
    try:
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task.exception() is None:
                return task.result()
        return None
    finally:
        for task in waits:
            task.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


class Talk:
    """One configuration's turns on one call."""

    def __init__(self, caller: Caller, run: Run, *, end_windows: int, start_windows: int, dg=None, chat=None, tts=None):
        self.caller, self.run = caller, run
        self.end_windows, self.start_windows = end_windows, start_windows
        self.dg, self.chat, self.tts = dg, chat, tts

    async def turn(self, clip, text: str) -> Turn:
        caller = self.caller
        events, tap = caller.events, caller.tap
        result = Turn(text=text)
        events_since, tap_since = len(events.items), len(tap.items)
        speech_at = None
        if self.dg is None:
            said = caller.sender.say(clip)
            result.origin = await said.end
        else:
            speech_at = time.perf_counter()
            await self.dg.speech_started()
            await asyncio.sleep(0.3)  # deliberate: the caller's words, before the vendor's final
            result.origin = time.perf_counter()
            await self.dg.results(text.lower(), is_final=True, speech_final=True, start=0.0, duration=1.0)
        try:
            started = await events.wait("agent.turn.started", events_since, 30)
        except TimeoutError:
            result.problem = "no turn started"
            return result
        turn_id = events.items[started][1]["data"]["turn_id"]
        result.heard = events.items[started][1]["data"].get("text", "")
        of_turn = lambda m: m["data"].get("turn_id") == turn_id  # noqa: E731
        ended = await _either(events, ("agent.reply.finished", "agent.reply.cancelled"), started, 60, of_turn)
        if ended is None or events.items[ended][1]["event"] != "agent.reply.finished":
            result.problem = "reply cancelled" if ended is not None else "no reply end"
            return result
        try:
            media = await tap.wait("media", tap_since, 1)
            first_audio = await events.wait("agent.first_audio", started, 1, of_turn)
        except TimeoutError:
            result.problem = "no audio"
            return result
        token = events.find(lambda m: m.get("event") == "agent.first_token" and of_turn(m), started)
        fa_ms = events.items[first_audio][1]["data"]["ms"]
        result.media_rx = tap.items[media][0]
        result.first_audio_rx = events.items[first_audio][0]
        result.total_ms = (result.media_rx - result.origin) * 1000
        result.token_ms = events.items[token][1]["data"]["ms"] if token is not None else None
        result.tts_ms = fa_ms - result.token_ms if result.token_ms is not None else None
        result.fa_ms = fa_ms
        self._lag(events_since, speech_at)
        if self.dg is None:
            final = events.find(lambda m: m.get("event") == "transcript.final", events_since)
            end_ms = events.items[final][1]["data"].get("end_ms") if final is not None else None
            if isinstance(end_ms, int):
                decided_ms = end_ms + self.end_windows * VAD_WINDOW_MS
                frame = (decided_ms * 8 - 1) // 160
                sent = caller.sender.sent_at
                if frame < len(sent):
                    result.decision_at = sent[frame]
                    result.eot_ms = (result.decision_at - result.origin) * 1000
        else:
            vendor_llm = [b - a for a, b in self.chat.spans if a >= result.origin]
            vendor_tts = [b - a for a, b in self.tts.firsts if a >= result.origin]
            result.vendor_llm_ms = vendor_llm[0] * 1000 if vendor_llm else None
            result.vendor_tts_ms = vendor_tts[0] * 1000 if vendor_tts else None
            if result.vendor_tts_ms is not None:
                result.project_ms = result.total_ms - result.vendor_tts_ms
        return result

    def _lag(self, since: int, speech_at: float | None) -> None:
        """One sample of the events group's lag: speech.started received here - when it was decided."""
        events = self.caller.events
        index = events.find(lambda m: m.get("event") == "speech.started", since)
        if index is None:
            return
        at, message = events.items[index]
        data = message["data"]
        if speech_at is not None and data.get("source") == "transcription":
            self.run.lags.append(at - speech_at)
        elif speech_at is None and data.get("source") == "vad" and isinstance(data.get("offset_ms"), int):
            frame = ((data["offset_ms"] + self.start_windows * VAD_WINDOW_MS) * 8 - 1) // 160
            sent = self.caller.sender.sent_at
            if frame < len(sent):
                self.run.lags.append(at - sent[frame])


def finish_stages(run: Run) -> None:
    """Split the rest of each turn into STT and send, with the run's median events-group lag."""
    lag = statistics.median(run.lags) if run.lags else 0.0
    for turn in run.turns:
        if turn.total_ms is None:
            continue
        send = max(0.0, turn.media_rx - turn.first_audio_rx + lag)
        turn.send_ms = send * 1000
        turn_start = turn.media_rx - send - turn.fa_ms / 1000
        stt_from = turn.decision_at if turn.decision_at is not None else turn.origin
        turn.stt_ms = (turn_start - stt_from) * 1000


async def run_config(config: str, args, database_url: str, prefix: str, logdir: Path, clips, bed) -> Run:
    from channels.layers import get_channel_layer

    from mediastream.conf import app_settings
    from tests.live import daphne_server
    from tests.vendors_stt.deepgram import FakeDeepgram

    vendors = config.startswith("vendors")
    chat = timed_chat(args.reply) if config != "embedded-scripted" else None
    dg = FakeDeepgram() if vendors else None
    tts = timed_tts(config.split("-", 1)[1]) if vendors else None
    run = Run(config)
    started_servers = []
    try:
        for server in (chat, dg, tts):
            if server is not None:
                await server.__aenter__()
                started_servers.append(server)
        overrides = overrides_for(
            config,
            chat.base_url if chat else None,
            dg.url if dg else None,
            (tts.base_url if tts else None),
        )
        if args.end_silence is not None:  # a what-if: the VAD's hang time (the bench reads the same value below)
            overrides["VAD"] = {"END_SILENCE_SECONDS": args.end_silence}
        log_path = logdir / f"daphne-{config}.log"
        server = daphne_server(
            database_url=database_url, redis_url=REDIS_URL, prefix=prefix, overrides=overrides, log_path=log_path,
            extra_env={"LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING")},
        )  # fmt: skip
        port, proc = await asyncio.to_thread(server.__enter__)
        try:
            layer = get_channel_layer()
            http, ws = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/twilio/media-stream/"
            caller = Caller(http, ws, layer, random.Random(args.seed), None if vendors else bed)
            rng = random.Random(args.seed)
            vad = app_settings.VAD
            end_silence = vad["END_SILENCE_SECONDS"] if args.end_silence is None else args.end_silence
            end_windows = max(1, math.ceil(end_silence * 1000 / VAD_WINDOW_MS - 1e-9))
            try:
                await caller.open()
                if dg is not None:
                    await dg.wait_connections(1, timeout=30)
                talk = Talk(caller, run, end_windows=end_windows, start_windows=int(vad["START_WINDOWS"]), dg=dg, chat=chat, tts=tts)
                log(f"{config}: daphne pid {proc.pid}; warming up")
                await talk.turn(clips[0], TEXTS[0])  # Piper's worker, Whisper's model, connection pools
                run.lags.clear()
                load0 = os.getloadavg()[0]
                pids = [proc.pid, *child_pids(proc.pid)]
                cpu0, t0 = sum(cpu_seconds(p) for p in pids), time.monotonic()
                for n in range(args.turns):
                    await asyncio.sleep(rng.uniform(0.3, 0.8))  # deliberate: the caller's pause before speaking
                    index = n % len(TEXTS)
                    run.turns.append(await talk.turn(clips[index], TEXTS[index]))
                    last = run.turns[-1]
                    log(f"  {config} turn {n + 1}: {fmt(last.total_ms)} ms {last.problem}")
                run.window_s = time.monotonic() - t0
                run.cpu_s = sum(cpu_seconds(p) for p in pids if os.path.exists(f"/proc/{p}")) - cpu0
                run.load = (load0, os.getloadavg()[0])
            finally:
                await caller.hang_up()
                await wait_streams_stopped([caller.stream.stream_sid] if caller.stream else [])
        except BaseException:
            tail = log_path.read_text(errors="replace").splitlines()[-30:] if log_path.exists() else []
            log("daphne log tail:\n" + "\n".join(tail))
            raise
        finally:
            await asyncio.to_thread(server.__exit__, None, None, None)
    finally:
        for server in reversed(started_servers):
            await server.__aexit__(None, None, None)
    finish_stages(run)
    return run


# --- output -----------------------------------------------------------------------------------------------


def fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


STAGES = [
    ("end of turn", "eot_ms"),
    ("STT", "stt_ms"),
    ("first token", "token_ms"),
    ("TTS first audio", "tts_ms"),
    ("send", "send_ms"),
    ("total", "total_ms"),
]


def stage_table(runs: list[Run]) -> str:
    headers = ["config", "n", "missed"]
    for label, _ in STAGES:
        headers += [f"{label} p50", "p90", "p99"]
    lines = []
    for run in runs:
        good = [t for t in run.turns if t.total_ms is not None]
        row = [run.config, str(len(good)), str(len(run.turns) - len(good))]
        for _, attr in STAGES:
            values = [getattr(t, attr) for t in good if getattr(t, attr) is not None]
            row += [fmt(percentile(values, q)) for q in (50, 90, 99)]
        lines.append(row)
    return render(headers, lines)


def verdicts(runs: list[Run]) -> list[str]:
    out = []
    for run in runs:
        good = [t for t in run.turns if t.total_ms is not None]
        totals = [t.total_ms for t in good]
        cpu = 100 * run.cpu_s / run.window_s if run.window_s else None
        where = f"daphne + children CPU {fmt(cpu)} % of one core; load average {run.load[0]:.1f} -> {run.load[1]:.1f}"
        if not totals:
            out.append(f"{run.config}: no turn measured")
            continue
        if run.config.startswith("embedded"):
            p50, p99 = percentile(totals, 50), percentile(totals, 99)
            ok = p50 <= TARGET_EMBEDDED_P50 and p99 <= TARGET_EMBEDDED_P99 and len(good) == len(run.turns)
            out.append(
                f"{run.config}: voice to voice p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {max(totals):.0f} ms "
                f"(targets p50 <= {TARGET_EMBEDDED_P50:.0f}, p99 <= {TARGET_EMBEDDED_P99:.0f}): "
                f"{'MET' if ok else 'NOT MET'}; {where}"
            )
        else:
            project = [t.project_ms for t in good if t.project_ms is not None]
            tts = [t.vendor_tts_ms for t in good if t.vendor_tts_ms is not None]
            llm = [t.vendor_llm_ms for t in good if t.vendor_llm_ms is not None]
            p99 = percentile(project, 99)
            ok = p99 is not None and p99 <= TARGET_PROJECT_P99 and len(good) == len(run.turns)
            out.append(
                f"{run.config}: vendor final sent -> first agent frame p50 {percentile(totals, 50):.0f} ms, "
                f"p99 {percentile(totals, 99):.0f} ms; fake TTS to its first chunk p50 {fmt(percentile(tts, 50), '.1f')} ms, "
                f"fake model to its last token p50 {fmt(percentile(llm, 50), '.1f')} ms; "
                f"what the project adds p50 {fmt(percentile(project, 50))} ms, p90 {fmt(percentile(project, 90))} ms, "
                f"p99 {fmt(p99)} ms, max {fmt(max(project, default=None))} ms (target p99 <= {TARGET_PROJECT_P99:.0f}): "
                f"{'MET' if ok else 'NOT MET'}; {where}"
            )
        problems = [t.problem for t in run.turns if t.problem]
        if problems:
            out.append(f"  {run.config} problems: {problems}")
        lags = run.lags
        if lags:
            out.append(f"  {run.config} events-group lag (for the send estimate): median {statistics.median(lags) * 1000:.1f} ms over {len(lags)}")
    return out


LEGEND = """\
end of turn: last speech frame sent -> the frame that completed the VAD hang time (embedded only);
STT: from there (vendors: from the vendor's final sent) to the turn's start; first token / TTS first audio: the event
log's agent.first_token.ms and agent.first_audio.ms - first_token.ms (server clock); send: the first frame leaving
the server -> received here (estimated, see the module docstring); total: last speech frame (vendors: final sent)
-> first agent frame received. All ms."""


# --- the first piece's synthesis alone (--first-piece) ----------------------------------------------------------


async def first_piece(args) -> int:
    """Piper's time to the first audio of a reply's first piece: the first clause vs the whole first sentence.

    In this process, no daphne: the reply is cut by ``SentenceStream`` as the
    engine cuts it (token by token, 3 characters a token), with the first-clause
    rule (the default) and without it (``first_clause_chars=None``), alternating
    per repeat. Wall ms to the first chunk, and the Piper worker's CPU ms for the
    piece (utime + stime from /proc): the CPU figure does not depend on how busy
    the machine is.
    """
    from mediastream.playback.textsplit import SentenceStream
    from mediastream.tts.piper import PiperBackend

    def first(rule: int | None) -> str:
        stream = SentenceStream(first_clause_chars=rule)
        for i in range(0, len(args.reply), 3):
            pieces = stream.feed(args.reply[i : i + 3])
            if pieces:
                return pieces[0]
        return stream.flush()[0]

    backend = PiperBackend()
    await backend.warm_up()
    pid = backend._worker.process.pid
    variants = {"first clause (now)": first(4), "first sentence (before)": first(None)}
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    load = os.getloadavg()[0]
    for _ in range(args.first_piece):
        for name, text in variants.items():
            began, cpu_began, first_at = time.perf_counter(), cpu_seconds(pid), None
            async for _chunk in backend.synthesize(text):
                first_at = first_at or time.perf_counter()
            wall[name].append((first_at - began) * 1000)
            cpu[name].append((cpu_seconds(pid) - cpu_began) * 1000)
    await backend.aclose()
    print(f"Piper, the reply's first piece ({args.first_piece} repeats each, alternating; reply {args.reply!r})")
    for name, text in variants.items():
        w, c = wall[name], cpu[name]
        print(f"  {name:<24} {text!r:<36} first audio wall p50 {percentile(w, 50):4.0f} ms  p90 {percentile(w, 90):4.0f}"
              f"   worker CPU p50 {percentile(c, 50):4.0f} ms  p90 {percentile(c, 90):4.0f}")  # fmt: skip
    print(f"load average {load:.2f} -> {os.getloadavg()[0]:.2f}")
    return 0


# --- main ----------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated: {', '.join(CONFIGS)}")
    parser.add_argument("--turns", type=int, default=30, help="measured turns per configuration (after one warm-up)")
    parser.add_argument("--reply", default=REPLY, help="what the fake model (and ScriptedAgent) answers")
    parser.add_argument(
        "--end-silence", type=float, default=None,
        help='what-if: MEDIASTREAM["VAD"]["END_SILENCE_SECONDS"] for the server (default: the setting)',
    )
    parser.add_argument("--noise-dbfs", type=float, default=-50.0, help="the caller's line noise (embedded)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=1800.0)
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument(
        "--first-piece", type=int, default=0, metavar="N",
        help="only time Piper on the reply's first piece, with and without the first-clause rule, N times each",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = set(args.configs) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown config(s): {', '.join(sorted(unknown))}")
    if args.turns < 1:
        parser.error("--turns must be >= 1")
    return args


async def run_all(args, *params) -> list[Run]:
    runs = []
    async with asyncio.timeout(args.max_seconds):
        for config in args.configs:
            runs.append(await run_config(config, args, *params))
    return runs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.first_piece:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
        import django

        django.setup()
        return asyncio.run(first_piece(args))
    run_name = f"{os.getpid()}x{secrets.token_hex(3)}"
    prefix = f"bench-v2v-{run_name}-"
    db_name = f"bench_v2v_{run_name}"
    logdir = Path(tempfile.mkdtemp(prefix="bench-v2v-"))
    started = time.monotonic()
    load_before = os.getloadavg()
    runs: list[Run] = []
    try:
        log(f"database {db_name}, channel-layer prefix {prefix}; load average {load_before[0]:.2f}")
        database_url = create_database(db_name)
        migrate(database_url, prefix)
        os.environ.update(
            DJANGO_SETTINGS_MODULE="tests.settings_live", DATABASE_URL=database_url, REDIS_URL=REDIS_URL,
            CHANNEL_LAYER_PREFIX=prefix,
        )  # fmt: skip
        os.environ.setdefault("LOG_LEVEL", "WARNING")
        import django

        django.setup()
        from tests.audio_fixtures import frames, speech_clip, white_noise

        clips = [speech_clip(text, lead_ms=200, tail_ms=200) for text in TEXTS]
        bed = frames(white_noise(10_000, dbfs=args.noise_dbfs, seed=7))
        runs = asyncio.run(run_all(args, database_url, prefix, logdir, clips, bed))
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
    if not runs:
        return 1
    print()
    hang = "" if args.end_silence is None else f"; VAD END_SILENCE_SECONDS {args.end_silence:g}"
    print(f"Voice-to-voice latency ({args.turns} turns per configuration; reply {args.reply!r}{hang})")
    print(stage_table(runs))
    print(LEGEND)
    print()
    for line in verdicts(runs):
        print(line)
    print(f"total {time.monotonic() - started:.0f} s; {os.cpu_count()} CPUs; load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
