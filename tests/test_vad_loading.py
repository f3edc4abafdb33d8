"""A call that arrives while the process is still loading the VAD model waits for it without stalling other calls.

The warm-up loads the shared model on a thread (as daphne starts serving, or at
the first connection); a stream
whose detector is built meanwhile used to wait for the model's lock on the event
loop, so every stream of the process stopped for the rest of the load. Here the
lock is held by another thread for a second, as a slow load would, while a
stream opens and a ticker on the same loop measures the longest gap.
"""

from __future__ import annotations

import asyncio
import gc
import threading

import pytest
from channels.db import database_sync_to_async

from mediastream import signals, vad
from voicecall.models import MediaStream

from .streams import live_stream

# Loaded before the test measures anything: the first load sets Django up and runs a full collection.
from settings.asgi import application  # noqa: E402, F401

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

HELD_SECONDS = 1.0


def _hold_the_model_lock(held: threading.Event, releasing: threading.Event) -> None:
    def hold() -> None:
        with vad._SharedModel._lock:
            held.set()
            threading.Event().wait(HELD_SECONDS)  # the load taking its time
            releasing.set()

    threading.Thread(target=hold, name="slow-vad-load", daemon=True).start()


async def _ticker(gaps: list[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    last = loop.time()
    while not stop.is_set():
        await asyncio.sleep(0.01)
        now = loop.time()
        gaps.append(now - last)
        last = now


async def test_a_stream_opened_during_the_model_load_does_not_block_the_loop(monkeypatch):
    monkeypatch.setattr(vad._SharedModel, "_session", None)  # not loaded yet in this process
    held, releasing = threading.Event(), threading.Event()
    _hold_the_model_lock(held, releasing)
    assert await asyncio.to_thread(held.wait, 5)
    gaps: list[float] = []
    stop = asyncio.Event()
    # What is measured is this process's event loop: its own collector's passes over everything the
    # test run made (migrations, collection) would show up as gaps too, so there are none meanwhile.
    gc.collect()
    gc.disable()
    ticker = asyncio.create_task(_ticker(gaps, stop))
    opened = asyncio.Event()

    def on_started(sender, **kwargs):  # announced once the stream's parts (its VAD among them) are built
        opened.set()

    signals.stream_started.connect(on_started)
    try:
        async with live_stream() as (comm, call, stream_sid):
            await asyncio.wait_for(opened.wait(), 10)
            assert releasing.is_set()  # the stream finished opening only once the model was there
            assert vad._SharedModel._session is not None
            row = await database_sync_to_async(MediaStream.objects.get)(stream_sid=stream_sid)
            assert row.stopped_at is None
    finally:
        signals.stream_started.disconnect(on_started)
        stop.set()
        await ticker
        gc.enable()
    assert max(gaps) < HELD_SECONDS / 2, f"the event loop stalled {max(gaps):.2f}s"


async def test_once_loaded_waiting_for_the_model_costs_nothing():
    assert await asyncio.to_thread(vad.preload)
    task = asyncio.ensure_future(vad.model_loaded())
    await asyncio.sleep(0)  # one step of the loop: no thread hop was needed
    assert task.done() and task.exception() is None
