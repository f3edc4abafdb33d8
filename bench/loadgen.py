"""Load generator worker: many simulated Twilio media streams on one asyncio loop.

Run as a child of ``bench/stream_load.py`` (``python -m bench.loadgen``); it
takes one JSON command per line on stdin and answers one JSON line on
stdout. Every stream is created the way Twilio creates one: a signed voice
webhook (:class:`~mediastream.simulator.TwilioCall`), then a signed upgrade,
``connected`` and ``start`` with the TwiML's parameters
(:class:`~mediastream.simulator.TwilioStream`, which also plays out and echoes
marks).

Media frames are paced to an absolute clock by one ticker per worker rather
than one sleeping task per stream (one wake-up per due time, not per stream):
stream *i* sends its frames at ``T0 + phase_i + k * 20 ms`` with phases
spread evenly over the 20 ms period (a low-discrepancy sequence), as
independent calls arrive at random phases. Each media message carries
``"benchSentNs": time.monotonic_ns()`` taken just before the socket write; see
``bench/consumer.py``.

``--server`` may list several servers (comma-separated): stream *i* goes to
server ``i % len(servers)``, a loopback round-robin over the processes of one
deployment (``bench/processes.py``).

Commands: ``open`` (n more streams), ``reset`` (new window), ``stats``, ``pause`` (no more media, then stats),
``stop`` (Twilio ``stop`` on every stream, close, exit).

``--plain`` sends media exactly as Twilio does (no ``benchSentNs``), and
``--direct WS_URL`` skips the voice webhook and connects there with a new call
SID (the reference handler in ``bench/frame_cost.py`` has no webhook).
"""

from __future__ import annotations

import asyncio
import base64
import heapq
import json
import os
import sys
import time

import httpx
from websockets.exceptions import ConnectionClosed

from mediastream.simulator import TwilioCall, TwilioStream, new_sid, stream_urls

from .common import AUTH_TOKEN, PUBLIC_BASE_URL, cpu_seconds, raise_nofile

FRAME = 0.02
GOLDEN = 0.6180339887498949
LATE_BIN_MS = 0.1
LATE_BINS = 20_000  # 2 s


def silence_frames() -> list[str]:
    return [base64.b64encode(b"\xff" * 160).decode()]


def noise_frames(seconds: float = 10.0, seed: int = 7) -> list[str]:
    """Speech-like noise: low-passed noise bursts with a ~4 Hz syllable envelope.

    1.5 s talk-spurts at about -20 dBFS alternate with 1.0 s pauses of -75 dBFS
    line noise, so ~60 % of the 32 ms VAD windows pass the energy gate and run
    the model (the pauses stay under the gate, as real silence does).
    """
    import numpy as np

    from mediastream.audio import ulaw_encode

    rng = np.random.default_rng(seed)
    n = int(seconds * 8000)
    t = np.arange(n) / 8000
    white = rng.standard_normal(n)
    # Two-pole low-pass around 1 kHz gives speech-ish spectral tilt.
    shaped = np.empty(n)
    a = 0.55
    y1 = y2 = 0.0
    for i in range(n):  # 80k samples, once
        y = (1 - a) ** 2 * white[i] + 2 * a * y1 - a * a * y2
        shaped[i] = y
        y2, y1 = y1, y
    shaped /= np.sqrt(np.mean(shaped**2))
    syllables = 0.35 + 0.65 * np.abs(np.sin(2 * np.pi * 2.0 * t)) ** 1.5  # 4 peaks/s
    talking = (t % 2.5) < 1.5
    level = np.where(talking, 10 ** (-20 / 20) * syllables, 10 ** (-75 / 20))
    pcm = np.clip(shaped * level * 32767, -32768, 32767).astype("<i2")
    mulaw = ulaw_encode(pcm)
    return [base64.b64encode(mulaw[i : i + 160]).decode() for i in range(0, len(mulaw) - 159, 160)]


class BenchStream(TwilioStream):
    """A TwilioStream whose media messages carry the bench send timestamp (unless ``plain``)."""

    frame_index = 0
    plain = False

    async def send_bench_media(self, payload_b64: str) -> None:
        self.sequence += 1
        self.chunk += 1
        if self.plain:  # Twilio's own field order and nothing else
            message = (
                '{"event":"media","sequenceNumber":"%d","media":{"track":"inbound","chunk":"%d",'
                '"timestamp":"%d","payload":"%s"},"streamSid":"%s"}'
                % (self.sequence, self.chunk, self.media_timestamp, payload_b64, self.stream_sid)
            )
            self.media_timestamp += 20
            await self.ws.send(message)
            return
        message = (
            '{"event":"media","sequenceNumber":"%d","media":{"track":"inbound","chunk":"%d",'
            '"timestamp":"%d","payload":"%s"},"streamSid":"%s","benchSentNs":%d}'
            % (self.sequence, self.chunk, self.media_timestamp, payload_b64, self.stream_sid, time.monotonic_ns())
        )
        self.media_timestamp += 20
        await self.ws.send(message)


class Generator:
    def __init__(
        self, server_url: str, worker_id: int, workers: int, audio: str, *, plain: bool = False, direct: str = ""
    ) -> None:
        self.servers = server_url.split(",")
        self.plain = plain
        self.direct = direct
        self.worker_id = worker_id
        self.workers = workers
        self.frames = noise_frames() if audio == "noise" else silence_frames()
        self.streams: list[BenchStream] = []
        self.heap: list[tuple[float, int]] = []
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()
        self.stopping = False
        self.paused = False
        self.dead: set[int] = set()
        self.close_codes: dict[str, int] = {}
        self.send_errors = 0
        self.reset()
        self._ticker = asyncio.create_task(self._tick(), name="ticker")

    def reset(self) -> None:
        self.sent = 0
        self.late = [0] * (LATE_BINS + 1)
        self.late_max = 0.0
        self.cpu0 = cpu_seconds(os.getpid())
        self.wall0 = time.monotonic()

    # --- streams ---------------------------------------------------------------

    async def open(self, n: int, concurrency: int = 8, first_index: int = 0) -> dict:
        sem = asyncio.Semaphore(concurrency)
        errors: list[str] = []

        async def one(global_index: int) -> None:
            async with sem:
                try:
                    stream = await self._open_one(self.servers[global_index % len(self.servers)])
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    return
            index = len(self.streams)
            stream.frame_index = (global_index * 97) % len(self.frames)
            self.streams.append(stream)
            phase = ((global_index * GOLDEN) % 1.0) * FRAME
            now = self.loop.time()
            k = int((now - self.t0 - phase) / FRAME) + 1
            heapq.heappush(self.heap, (self.t0 + phase + k * FRAME, index))

        await asyncio.gather(*(one(first_index + i) for i in range(n)))
        return {"opened": n - len(errors), "failed": len(errors), "errors": errors[:3], "streams": len(self.streams)}

    async def _open_one(self, server_url: str) -> BenchStream:
        """One call as Twilio makes it: the signed voice webhook, then the stream (or ``--direct``: the stream only)."""
        if self.direct:
            stream = BenchStream(self.direct, auth_token=AUTH_TOKEN, call_sid=new_sid("CA"))
        else:
            for attempt in range(3):  # a busy machine can time a webhook out: a new call then, as Twilio would place
                call = TwilioCall(server_url=server_url, public_url=PUBLIC_BASE_URL, auth_token=AUTH_TOKEN)
                try:
                    instructions = await call.answer()
                    break
                except httpx.TimeoutException:
                    if attempt == 2:
                        raise
            connect_url, signed_url = stream_urls(PUBLIC_BASE_URL, server_url, instructions.url)
            stream = BenchStream(
                connect_url,
                signed_url=signed_url,
                auth_token=AUTH_TOKEN,
                call_sid=call.call_sid,
                parameters=instructions.parameters,
            )
        stream.plain = self.plain
        await stream.connect()
        await stream.start()
        return stream

    async def _tick(self) -> None:
        loop = self.loop
        heap = self.heap
        frames = self.frames
        nframes = len(frames)
        late = self.late
        while not self.stopping:
            if not heap:
                await asyncio.sleep(0.005)
                continue
            due = heap[0][0]
            now = loop.time()
            if due > now:
                await asyncio.sleep(due - now)
                continue
            _, index = heapq.heappop(heap)
            stream = self.streams[index]
            if index in self.dead:
                continue
            if self.paused:
                heapq.heappush(heap, (due + FRAME, index))
                continue
            lateness_ms = (now - due) * 1000.0
            b = int(lateness_ms / LATE_BIN_MS)
            late = self.late
            late[min(LATE_BINS, b)] += 1
            self.late_max = max(self.late_max, lateness_ms)
            payload = frames[stream.frame_index % nframes]
            stream.frame_index += 1
            try:
                await stream.send_bench_media(payload)
            except ConnectionClosed:
                self._dead(index)
                continue
            except Exception:
                self.send_errors += 1
                self._dead(index)
                continue
            self.sent += 1
            heapq.heappush(heap, (due + FRAME, index))
            if not self.sent % 64:  # behind schedule the sends never wait: let open() and readers run
                await asyncio.sleep(0)

    def _dead(self, index: int) -> None:
        if index in self.dead:
            return
        self.dead.add(index)
        code = self.streams[index].close_code
        key = str(code)
        self.close_codes[key] = self.close_codes.get(key, 0) + 1

    def _scan_closed(self) -> None:
        for index, stream in enumerate(self.streams):
            if index not in self.dead and stream.closed.is_set():
                self._dead(index)

    def stats(self) -> dict:
        self._scan_closed()
        wall = time.monotonic() - self.wall0
        total = sum(self.late)
        pct = {}
        for q in (50, 99):
            target = max(1, int(total * q / 100))
            running = 0
            value = None
            for i, n in enumerate(self.late):
                running += n
                if n and running >= target:
                    value = (i + 0.5) * LATE_BIN_MS
                    break
            pct[f"late_p{q}"] = value
        return {
            "sent": self.sent,
            "wall_s": wall,
            "cpu_s": cpu_seconds(os.getpid()) - self.cpu0,
            "late_max": self.late_max,
            **pct,
            "streams": len(self.streams),
            "live": len(self.streams) - len(self.dead),
            "closed": len(self.dead),
            "close_codes": dict(self.close_codes),
            "send_errors": self.send_errors,
            "clears_received": sum(s.clears for s in self.streams),
        }

    async def stop(self) -> dict:
        self.stopping = True
        self._ticker.cancel()
        await asyncio.gather(self._ticker, return_exceptions=True)
        self._scan_closed()
        before = len(self.dead)
        sem = asyncio.Semaphore(32)

        async def one(stream: BenchStream) -> int | None:
            async with sem:
                try:
                    if stream.close_code is None:
                        await stream.stop()
                        if not self.direct:  # the reference handler leaves closing to Twilio
                            await stream.wait_closed(timeout=15)
                except Exception:
                    pass
                try:
                    await asyncio.wait_for(stream.close(), 5)
                except Exception:
                    pass
                return stream.close_code

        codes = await asyncio.gather(*(one(s) for s in self.streams))
        final: dict[str, int] = {}
        for code in codes:
            final[str(code)] = final.get(str(code), 0) + 1
        return {"closed_before_stop": before, "final_close_codes": final}


async def serve(server_url: str, worker_id: int, workers: int, audio: str, plain: bool = False, direct: str = "") -> None:
    gen = Generator(server_url, worker_id, workers, audio, plain=plain, direct=direct)
    loop = asyncio.get_running_loop()

    def reply(data: dict) -> None:
        sys.stdout.write(json.dumps(data) + "\n")
        sys.stdout.flush()

    reply({"ready": True, "pid": os.getpid()})
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            await gen.stop()
            return
        cmd = json.loads(line)
        kind = cmd.get("cmd")
        if kind == "open":
            reply(await gen.open(int(cmd["n"]), first_index=int(cmd.get("first_index", 0))))
        elif kind == "reset":
            gen.reset()
            reply({"ok": True})
        elif kind == "pause":  # stop sending media (streams stay open), e.g. at the end of a measured window
            gen.paused = True
            reply(gen.stats())
        elif kind == "stats":
            reply(gen.stats())
        elif kind == "stop":
            reply(await gen.stop())
            return
        else:
            reply({"error": f"unknown command {kind!r}"})


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--worker-id", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--audio", choices=["silence", "noise"], default="silence")
    parser.add_argument("--plain", action="store_true", help="media exactly as Twilio sends it (no benchSentNs)")
    parser.add_argument("--direct", default="", help="connect to this ws:// URL without the voice webhook")
    args = parser.parse_args()
    raise_nofile()
    asyncio.run(serve(args.server, args.worker_id, args.workers, args.audio, args.plain, args.direct))


if __name__ == "__main__":
    main()
