"""The bench consumer: ``MediaStreamConsumer`` plus per-frame lag and handler-time recording.

The bench client appends ``"benchSentNs":<time.monotonic_ns()>`` as the last
field of each media message, taken just before the frame is written to its
socket. The real parser ignores unknown top-level fields, so the app sees an
ordinary Twilio media message. Here, before the real handler runs:

* **lag** = handler start - client send, i.e. kernel loopback + daphne's
  reactor + autobahn + daphne's per-connection queue + waiting for the
  event loop (``CLOCK_MONOTONIC`` is one clock for all processes on Linux);
* **handler time** = how long ``MediaStreamConsumer.websocket_receive`` (or ``receive_now``) ran
  for that frame (parse, stats, VAD, transcription feed).

Both go into fixed-bin histograms (Python lists: an increment costs ~30 ns),
read and reset through ``bench.asgi``'s ``/bench/...`` endpoints.
"""

from __future__ import annotations

import gc
import os
import time
import weakref

from mediastream.consumers import MediaStreamConsumer
from mediastream.session import State

__all__ = ["CONSUMERS", "PROBE", "RECORDER", "BenchConsumer", "Recorder", "server_snapshot"]

_STAMP = '"benchSentNs":'
_STAMP_LEN = len(_STAMP)

#: Lag histogram: 10 us bins up to 5 s (last bin = overflow).
LAG_BIN_NS = 10_000
LAG_BINS = 500_000
#: Handler histogram: 1 us bins up to 200 ms.
HANDLER_BIN_NS = 1_000
HANDLER_BINS = 200_000
SERIES_BUCKET_NS = 100_000_000
SERIES_BUCKETS = 600


def _percentiles(hist: list[int], bin_ns: int, qs=(50, 90, 99, 99.9)) -> dict:
    total = sum(hist)
    out = {"count": total}
    if not total:
        for q in qs:
            out[f"p{q:g}"] = None
        return out
    targets = sorted((q, max(1, int(round(total * q / 100.0)))) for q in qs)
    running = 0
    ti = 0
    for index, n in enumerate(hist):
        if not n:
            continue
        running += n
        while ti < len(targets) and running >= targets[ti][1]:
            # Middle of the bin, in milliseconds.
            out[f"p{targets[ti][0]:g}"] = (index + 0.5) * bin_ns / 1e6
            ti += 1
        if ti == len(targets):
            break
    return out


class Recorder:
    """Process-wide histograms of frame lag and handler time."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.lag = [0] * (LAG_BINS + 1)
        self.handler = [0] * (HANDLER_BINS + 1)
        self.lag_max_ns = 0
        self.handler_max_ns = 0
        self.handler_total_ns = 0
        self.since_ns = time.monotonic_ns()
        #: Max lag per 100 ms of the window (first SERIES_BUCKETS buckets): shows stalls.
        self.series_max = [0] * SERIES_BUCKETS
        #: Garbage-collector pauses per generation: [count, total ns, max ns].
        self.gc = {0: [0, 0, 0], 1: [0, 0, 0], 2: [0, 0, 0]}
        self._gc_start = 0

    def gc_callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter_ns()
            return
        if not self._gc_start:
            return
        took = time.perf_counter_ns() - self._gc_start
        self._gc_start = 0
        entry = self.gc[info["generation"]]
        entry[0] += 1
        entry[1] += took
        entry[2] = max(entry[2], took)

    def frame(self, lag_ns: int, handler_ns: int, now_ns: int) -> None:
        lag_ns = max(lag_ns, 0)
        k = (now_ns - self.since_ns) // SERIES_BUCKET_NS
        if k < SERIES_BUCKETS and lag_ns > self.series_max[k]:
            self.series_max[k] = lag_ns
        i = lag_ns // LAG_BIN_NS
        self.lag[min(LAG_BINS, i)] += 1
        self.lag_max_ns = max(self.lag_max_ns, lag_ns)
        j = handler_ns // HANDLER_BIN_NS
        self.handler[min(HANDLER_BINS, j)] += 1
        self.handler_max_ns = max(self.handler_max_ns, handler_ns)
        self.handler_total_ns += handler_ns

    def summary(self, want_objects: bool = False) -> dict:
        lag = _percentiles(self.lag, LAG_BIN_NS)
        lag["max"] = self.lag_max_ns / 1e6
        lag["over_20ms"] = sum(self.lag[20_000_000 // LAG_BIN_NS :])
        handler = _percentiles(self.handler, HANDLER_BIN_NS)
        handler["max"] = self.handler_max_ns / 1e6
        handler["mean"] = (self.handler_total_ns / handler["count"] / 1e6) if handler["count"] else None
        elapsed = time.monotonic_ns() - self.since_ns
        used = min(SERIES_BUCKETS, int(elapsed // SERIES_BUCKET_NS) + 1)
        series = [round(v / 1e6, 2) for v in self.series_max[:used]]
        gc_pauses = {
            f"gen{g}": {"count": c, "total_ms": round(t / 1e6, 2), "max_ms": round(m / 1e6, 2)}
            for g, (c, t, m) in self.gc.items()
        }
        return {
            "lag_ms": lag,
            "handler_ms": handler,
            "window_s": elapsed / 1e9,
            "lag_max_per_100ms": series,
            "gc": gc_pauses,
            "gc_objects": len(gc.get_objects()) if want_objects else None,
        }


RECORDER = Recorder()
gc.callbacks.append(RECORDER.gc_callback)
#: Every live bench consumer in this process (for the streaming count and app-side counters).
CONSUMERS: weakref.WeakSet = weakref.WeakSet()


def server_snapshot() -> dict:
    streaming = 0
    media_frames = 0
    before_start = 0
    active = 0
    for consumer in list(CONSUMERS):
        session = getattr(consumer, "session", None)
        if session is None:
            continue
        if session.state is State.STREAMING:
            streaming += 1
        teardown = consumer._teardown_task
        if teardown is None or not teardown.done():
            active += 1
        media_frames += session.stats.media_frames
        before_start += session.stats.media_before_start
    return {
        "consumers": len(CONSUMERS),
        "streaming": streaming,
        "active": active,  # not yet torn down (teardown writes the stream's last rows)
        "app_media_frames": media_frames,
        "app_media_before_start": before_start,
    }


class LoopProbe:
    """Sleeps 5 ms at a time and records how late it wakes: event-loop stalls, whatever their cause."""

    INTERVAL = 0.005
    STALL_MS = 15.0

    def __init__(self) -> None:
        self.task = None
        self.reset()

    def reset(self) -> None:
        self.since = time.monotonic()
        self.stalls: list[tuple[float, float]] = []  # (seconds into the window, ms late)
        self.max_ms = 0.0

    def ensure_started(self) -> None:
        global STALL_SAMPLER
        if self.task is None:
            import asyncio

            if os.environ.get("BENCH_STALL_STACKS") and STALL_SAMPLER is None:
                STALL_SAMPLER = StallSampler()

            self.task = asyncio.get_running_loop().create_task(self._run(), name="bench-loop-probe")

    async def _run(self) -> None:
        import asyncio

        while True:
            t = time.monotonic()
            if STALL_SAMPLER is not None:
                STALL_SAMPLER.beat = t
            await asyncio.sleep(self.INTERVAL)
            late = (time.monotonic() - t - self.INTERVAL) * 1000
            self.max_ms = max(self.max_ms, late)
            if late > self.STALL_MS and len(self.stalls) < 2000:
                self.stalls.append((round(t - self.since, 3), round(late, 1)))

    def summary(self) -> dict:
        out = {"probe_max_ms": round(self.max_ms, 1), "stalls": self.stalls[:200], "stall_count": len(self.stalls)}
        if STALL_SAMPLER is not None:
            out["stall_stacks"] = STALL_SAMPLER.summary()
        return out


class StallSampler:
    """What the event-loop thread is doing while the loop is late: its stack, sampled every 5 ms from another thread.

    The probe says when the loop is behind; this says whether that is one long callback (the same stack in every
    sample of a stall) or a backlog of short ones (stacks that change from sample to sample).
    """

    def __init__(self, beat_age_ms: float = 30.0) -> None:
        import collections
        import threading

        self.beat = time.monotonic()
        self.loop_thread = threading.get_ident()
        self.beat_age = beat_age_ms / 1000
        self.stacks: collections.Counter = collections.Counter()
        self.leaves: collections.Counter = collections.Counter()
        self.samples = 0
        threading.Thread(target=self._run, name="bench-stall-sampler", daemon=True).start()

    def _run(self) -> None:
        import sys

        while True:
            time.sleep(0.005)
            if time.monotonic() - self.beat < self.beat_age:
                continue
            frame = sys._current_frames().get(self.loop_thread)
            names = []
            while frame is not None and len(names) < 60:
                code = frame.f_code
                names.append(f"{code.co_filename.rsplit('/', 2)[-1]}:{code.co_name}")
                frame = frame.f_back
            self.samples += 1
            self.leaves[names[0] if names else "?"] += 1
            entry = next((i for i in range(1, len(names)) if names[i] == "events.py:_run"), len(names))
            self.stacks[" < ".join(names[max(0, entry - 4) : entry])] += 1

    def summary(self) -> dict:
        return {"samples": self.samples, "leaves": self.leaves.most_common(25), "stacks": self.stacks.most_common(40)}


STALL_SAMPLER = None


PROBE = LoopProbe()


class BenchConsumer(MediaStreamConsumer):
    """The real consumer, timed: the frame handlers (queued and direct) are wrapped."""

    async def websocket_connect(self, message):
        CONSUMERS.add(self)
        PROBE.ensure_started()
        await super().websocket_connect(message)

    async def websocket_receive(self, message):
        start, sent = time.monotonic_ns(), _sent_ns(message.get("text"))
        await super().websocket_receive(message)
        if sent:
            RECORDER.frame(start - sent, time.monotonic_ns() - start, start)

    def receive_now(self, text):
        """The same for a text frame daphne hands over without its queue (mediastream.dispatch)."""
        start, sent = time.monotonic_ns(), _sent_ns(text)
        rest = super().receive_now(text)
        if sent:
            RECORDER.frame(start - sent, time.monotonic_ns() - start, start)
        return rest


def _sent_ns(text: str | None) -> int:
    """The client's send time stamped at the end of a media message, or 0."""
    if text is not None and text[-1:] == "}":
        j = text.find(_STAMP, max(0, len(text) - 48))
        if j != -1:
            try:
                return int(text[j + _STAMP_LEN : -1])
            except ValueError:
                pass
    return 0
