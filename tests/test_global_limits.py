"""Two real daphne processes sharing Redis and PostgreSQL enforce one MAX_CONNECTIONS between them.

Callers come from several loopback addresses (so no per-address cap is what
refuses them); a process killed with SIGKILL gives its slots back within its
lease, without any teardown.
"""

from __future__ import annotations

import asyncio
import signal
import uuid

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from mediastream.simulator import TwilioCall, TwilioStream, sign
from voicecall.models import MediaStream

from .live import Live
from .streams import PUBLIC, auth_token, hang_up, wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

LEASE_SECONDS = 2.0


class StreamFrom(TwilioStream):
    """A Twilio media stream whose socket comes from ``address``."""

    def __init__(self, *args, address: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.address = address

    async def connect(self, open_timeout: float = 10) -> None:
        headers = {"X-Twilio-Signature": sign(self.auth_token, self.signed_url)}
        self.ws = await connect(
            self.connect_url, additional_headers=headers, open_timeout=open_timeout,
            compression=None, local_addr=(self.address, 0),
        )
        self._reader = asyncio.create_task(self._read(), name=f"sim-reader:{self.stream_sid}")


async def call_from(live: Live, address: str) -> StreamFrom | None:
    """A call answered by ``live`` whose stream is admitted (recorded), or None if the upgrade got 403."""
    call = TwilioCall(server_url=live.http, public_url=PUBLIC, auth_token=auth_token())
    instructions = await call.answer()
    stream = StreamFrom(
        live.ws, signed_url=instructions.url, auth_token=call.auth_token, call_sid=call.call_sid,
        parameters=instructions.parameters, address=address,
    )
    try:
        await stream.connect()
    except InvalidStatus as exc:
        assert exc.response.status_code == 403
        return None
    await stream.start()
    await wait_for(lambda: MediaStream.objects.filter(stream_sid=stream.stream_sid).exists())
    return stream


async def admitted_within(live: Live, address: str, seconds: float) -> tuple[StreamFrom, float]:
    """Try calls until one is admitted; (its stream, seconds it took). Bounded in time."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        stream = await call_from(live, address)
        if stream is not None:
            return stream, loop.time() - started
        assert loop.time() - started < seconds, f"no call admitted within {seconds}s"
        await asyncio.sleep(0.1)


async def test_two_processes_share_one_max_connections_and_a_killed_one_frees_its_slots(daphne):
    overrides = {
        "MAX_CONNECTIONS": 4,
        "GLOBAL_LIMITS": {"KEY": f"mstest:caps:{uuid.uuid4().hex}", "LEASE_SECONDS": LEASE_SECONDS},
    }
    async with daphne.astart(overrides, name="caps-a") as a, daphne.astart(overrides, name="caps-b") as b:
        on_a = [await call_from(a, f"127.0.0.{11 + n}") for n in range(3)]
        on_b = [await call_from(b, "127.0.0.14")]
        assert all(on_a) and all(on_b)
        # Four open across the two: each process alone holds fewer than its own cap of 4.
        assert await call_from(a, "127.0.0.15") is None
        assert await call_from(b, "127.0.0.16") is None
        assert "connections open across the processes (MAX_CONNECTIONS)" in b.log.read_text()

        # A call that ends frees its slot for the other process.
        await hang_up(on_a.pop())
        moved, _ = await admitted_within(b, "127.0.0.17", 10)
        on_b.append(moved)
        assert await call_from(a, "127.0.0.18") is None

        # SIGKILL: no teardown runs, a's two slots stay counted until its lease expires.
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(10)
        first, waited = await admitted_within(b, "127.0.0.19", LEASE_SECONDS + 8)
        assert waited <= LEASE_SECONDS + 3  # the lease, plus the test's own call set-up
        second = await call_from(b, "127.0.0.20")
        assert second is not None
        assert await call_from(b, "127.0.0.21") is None  # b now holds all four
        for stream in [*on_b, first, second]:
            await hang_up(stream)
