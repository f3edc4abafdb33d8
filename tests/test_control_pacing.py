"""Outbound pacing: TWILIO_CALLS_PER_SECOND holds across processes sharing the database."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from django.test import override_settings

from voicecall import pacing
from voicecall.models import Call, PacingSlot

from .control_support import fake_twilio
from .live import ROOT, server_database_url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

RATE = 5.0  # calls per second in these tests: 0.2 s apart
#: Slack for when a request reaches the fake after its slot: each request's own latency
#: (process scheduling, a new connection) varies by tens of milliseconds on a loaded machine.
JITTER = 0.1


def test_reservations_come_out_one_interval_apart():
    delays = [pacing.reserve("AC-test", RATE) for _ in range(4)]
    gaps = [later - earlier for earlier, later in zip(delays, delays[1:])]
    assert delays[0] == pytest.approx(0, abs=0.05)
    assert all(gap == pytest.approx(1 / RATE, abs=0.02) for gap in gaps), gaps
    assert PacingSlot.objects.get(key="AC-test").next_at is not None


def test_an_idle_account_starts_at_once():
    pacing.reserve("AC-idle", 1000.0)
    time.sleep(0.01)
    assert pacing.reserve("AC-idle", 1000.0) == 0


def test_each_account_has_its_own_bucket():
    pacing.reserve("AC-one", 1.0)
    assert pacing.reserve("AC-two", 1.0) == 0


def test_a_rate_must_be_positive():
    with pytest.raises(ValueError):
        pacing.reserve("AC-test", 0)


def worker(fake_origin: str, count: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings_control",
        "DATABASE_URL": server_database_url(),
        "TWILIO_API_BASE_URL": fake_origin,
        "TWILIO_CALLS_PER_SECOND": str(RATE),
        "PYTHONPATH": str(ROOT),
        "LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.pacing_worker", str(count)], cwd=ROOT, env=env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_two_processes_placing_calls_together_stay_under_the_rate():
    per_worker = 3
    with fake_twilio() as fake:
        workers = [worker(fake.origin, per_worker) for _ in range(2)]
        try:
            for proc in workers:
                assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
            for proc in workers:  # both start placing at the same moment
                proc.stdin.write("go\n")
                proc.stdin.flush()
            outputs = [proc.communicate(timeout=60) for proc in workers]
        finally:
            for proc in workers:
                if proc.poll() is None:
                    proc.kill()
        assert [proc.returncode for proc in workers] == [0, 0], [err for _, err in outputs]
        sids = [out.split() for out, _ in outputs]
        creates = sorted(fake.requests_to("/Calls.json"), key=lambda request: request.at)
    assert len(creates) == 2 * per_worker and all(len(group) == per_worker for group in sids)
    arrivals = [request.at for request in creates]
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:])]
    assert min(gaps) >= 1 / RATE - JITTER, gaps
    # Without pacing the six requests would arrive within a few milliseconds.
    assert arrivals[-1] - arrivals[0] >= (len(arrivals) - 1) / RATE - JITTER
    assert Call.objects.filter(call_sid__in=sids[0] + sids[1]).count() == 2 * per_worker


@override_settings(TWILIO_CALLS_PER_SECOND=RATE)
def test_place_call_waits_for_its_slot():
    from voicecall.control import place_call

    with fake_twilio() as fake, override_settings(TWILIO_CALLS_PER_SECOND=RATE):
        for _ in range(3):
            place_call("+14155551212", "+15005550006")
        arrivals = [request.at for request in fake.requests_to("/Calls.json")]
    assert arrivals[-1] - arrivals[0] >= 2 / RATE - JITTER
