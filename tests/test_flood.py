"""A flood of signed, silent sockets must not lock real calls out, nor flood the log.

The upgrade signature covers only the URL, so anyone who saw one signed
upgrade can open sockets that never send ``start``. Here 600 such sockets from
200 loopback addresses reconnect the moment they are closed, against a real
daphne with the default caps, while real calls (signed webhook, upgrade,
``start`` at once, as Twilio does) keep arriving. At least 90 % of the real
calls must be admitted, and the app must log fewer than 30 lines a second.
"""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from websockets.asyncio.client import connect

from mediastream.simulator import sign

from .streams import PUBLIC, auth_token, open_call, wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

ADDRESSES = 200
SOCKETS_PER_ADDRESS = 3
MAX_FLOOD_SECONDS = 40.0
REAL_CALLS = 20
APP_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d (\d\d:\d\d:\d\d),\d+ \w+ (mediastream|voicecall)\b", re.M)


async def _silent_socket(url: str, headers: dict, address: str, stop: asyncio.Event, counts: dict) -> None:
    """Connect, say nothing, reconnect as soon as the server closes us; until the flood is stopped."""
    while not stop.is_set():
        try:
            async with connect(url, additional_headers=headers, local_addr=(address, 0), open_timeout=5) as ws:
                counts["opened"] += 1
                closed = asyncio.ensure_future(ws.wait_closed())
                stopped = asyncio.ensure_future(stop.wait())
                await asyncio.wait({closed, stopped}, return_when=asyncio.FIRST_COMPLETED)
                stopped.cancel()
                if closed.done():
                    key = f"closed {ws.close_code}"
                    counts[key] = counts.get(key, 0) + 1
        except Exception as exc:  # refused at the handshake (403) or reset: try again at once
            counts[type(exc).__name__] = counts.get(type(exc).__name__, 0) + 1
            await asyncio.sleep(0.01)


async def _real_call(live, failures: list[str]) -> bool:
    try:
        _call, stream = await open_call(live, timeout=5.0)
    except Exception as exc:
        failures.append(f"{type(exc).__name__}: {str(exc)[:80]}")
        return False
    await stream.close()
    return True


async def test_silent_flood_from_many_addresses_does_not_lock_real_calls_out(daphne):
    async with daphne.astart({}, name="flood") as live:
        signed = "wss://voice.example.com/twilio/media-stream/"
        headers = {"X-Twilio-Signature": sign(auth_token(), signed)}
        stop = asyncio.Event()
        counts: dict = {"opened": 0}
        log_start = live.log.stat().st_size
        started = time.monotonic()
        flood = [
            asyncio.create_task(_silent_socket(live.ws, headers, f"127.0.{1 + n // 250}.{1 + n % 250}", stop, counts))
            for n in range(ADDRESSES)
            for _ in range(SOCKETS_PER_ADDRESS)
        ]
        try:
            await wait_for(lambda: counts["opened"] >= 200, timeout=15)  # the flood is on
            admitted, failures = 0, []
            for _ in range(REAL_CALLS):
                admitted += await asyncio.wait_for(_real_call(live, failures), MAX_FLOOD_SECONDS)
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*flood, return_exceptions=True), 20)
        seconds = time.monotonic() - started
        log = live.log.read_bytes()[log_start:].decode(errors="replace")

    app_lines = APP_LOG_LINE.findall(log)
    print(
        f"\nflood: {counts}; real calls admitted {admitted}/{REAL_CALLS} in {seconds:.1f}s; "
        f"app log {len(app_lines)} lines in {seconds:.0f}s"
    )
    assert counts["opened"] > 600, counts  # the silent sockets really churned
    assert admitted >= 0.9 * REAL_CALLS, f"{admitted}/{REAL_CALLS} real calls admitted during the flood: {failures}"
    assert len(app_lines) / seconds < 30, "\n".join(log.splitlines()[-20:])
