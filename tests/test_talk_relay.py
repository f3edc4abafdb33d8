"""The browser talk relay's protocol and limits, against a real daphne with staff session cookies.

The voice behind these sessions is the default one: no ``MEDIASTREAM["AGENT"]``,
so the embedded demo agent answers through the (test settings') silent TTS.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest
from websockets.exceptions import InvalidStatus

from mediastream.talk.protocol import (
    FRAME_TOO_LARGE,
    TOO_MANY_SESSIONS,
    TOO_MANY_SESSIONS_FOR_CONNECTION,
    UNKNOWN_SESSION,
    UNKNOWN_TOOL_CALL,
)

from .talk_client import RelayClient, RelayRefused, asession_cookie, relay_server, session_cookie, silence_pcm

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

MAX_SESSIONS = 3
MAX_AUDIO = 512 * 1024


@pytest.fixture(scope="module")
def live(daphne):
    with relay_server(daphne, {"TALK": {"MAX_SESSIONS": MAX_SESSIONS}}, name="talk-limits") as server:
        yield server


@pytest.fixture(scope="module")
def short_lived(daphne):
    with relay_server(daphne, {"TALK": {"SESSION_TTL_SECONDS": 1.0}}, name="talk-ttl") as server:
        yield server


@pytest.fixture
def cookie():
    return session_cookie("staff")


def audio(session_id: str, pcm: bytes) -> dict:
    return {"relaySessionId": session_id, "audioBase64": base64.b64encode(pcm).decode()}


async def test_create_answers_with_the_session_and_its_audio_contract_and_the_voice_gets_ready(live, cookie):
    async with await RelayClient.open(live, cookie) as client:
        before_ms = time.time() * 1000
        created = await client.create()
        assert created["transport"] == "gateway-relay"
        assert created["audio"] == {
            "inputEncoding": "pcm16",
            "inputSampleRateHz": 24000,
            "outputEncoding": "pcm16",
            "outputSampleRateHz": 24000,
        }
        assert created["provider"] == "cascade"  # no MEDIASTREAM["AGENT"]: the embedded demo agent
        assert before_ms + 1800_000 - 5000 <= created["expiresAt"] <= time.time() * 1000 + 1800_000  # epoch ms
        session = created["relaySessionId"]
        await client.wait_event(lambda e: e["type"] == "ready" and e["relaySessionId"] == session)
        # The demo greets: its audio (silent TTS here) arrives as PCM16 and the greeting is a final transcript.
        greeting = await client.wait_event(lambda e: e["type"] == "transcript" and e["final"])
        assert greeting["role"] == "assistant" and greeting["text"].startswith("Hello, thanks for calling")
        assert client.of(session, "audio")
        await client.wait_event(lambda e: e["type"] == "mark" and e["markName"] == "turn-1")
        sent = await client.call("audio", audio(session, silence_pcm(40)))
        assert sent == {"ok": True}
        heard = await client.wait_event(lambda e: e["type"] == "inputAudio")
        assert heard["byteLength"] == 1920


@pytest.mark.parametrize("who", ["anonymous", "not staff", "inactive staff"])
async def test_only_active_staff_get_past_the_handshake(live, who):
    cookie = {
        "anonymous": None,
        "not staff": lambda: asession_cookie("visitor", is_staff=False),
        "inactive staff": lambda: asession_cookie("gone", is_active=False),
    }[who]
    cookie = await cookie() if cookie else None
    with pytest.raises(InvalidStatus) as refused:
        await RelayClient.open(live, cookie)
    assert refused.value.response.status_code == 403


async def test_a_page_of_another_origin_cannot_use_a_staff_cookie(live, cookie):
    with pytest.raises(InvalidStatus) as refused:
        await RelayClient.open(live, cookie, origin="https://evil.example.com")
    assert refused.value.response.status_code == 403


async def test_session_caps_per_connection_and_per_process(live, cookie):
    first = await RelayClient.open(live, cookie)
    second = await RelayClient.open(live, cookie)
    third = await RelayClient.open(live, cookie)
    try:
        one = (await first.create())["relaySessionId"]
        await first.create()
        with pytest.raises(RelayRefused) as refused:
            await first.create()
        assert refused.value.message == TOO_MANY_SESSIONS_FOR_CONNECTION
        await second.create()  # another connection still may: 3 of MAX_SESSIONS 3 now
        with pytest.raises(RelayRefused) as refused:
            await third.create()
        assert refused.value.message == TOO_MANY_SESSIONS
        await first.call("stop", {"relaySessionId": one})
        assert (await third.create())["relaySessionId"]  # a stopped session frees its place
    finally:
        for client in (first, second, third):
            await client.close()


async def test_a_closed_socket_gives_its_sessions_places_back(live, cookie):
    first = await RelayClient.open(live, cookie)
    await first.create()
    await first.create()
    await first.close()
    async with await RelayClient.open(live, cookie) as client:
        created = []
        deadline = time.monotonic() + 10
        while len(created) < MAX_SESSIONS and time.monotonic() < deadline:  # the server ends the first socket's sessions as it notices it closed
            try:
                created.append(await client.create())
            except RelayRefused as exc:
                assert exc.message == TOO_MANY_SESSIONS_FOR_CONNECTION or exc.message == TOO_MANY_SESSIONS
                if exc.message == TOO_MANY_SESSIONS_FOR_CONNECTION:
                    break
                await asyncio.sleep(0.05)
        assert len(created) == 2  # this connection's own cap, not the process's: the first socket's two are gone
        other = await RelayClient.open(live, cookie)
        try:
            await other.create()  # the third place of MAX_SESSIONS is free as well
        finally:
            await other.close()


async def test_audio_frames_over_the_limit_are_refused_and_the_limit_itself_is_accepted(live, cookie):
    async with await RelayClient.open(live, cookie) as client:
        session = (await client.create())["relaySessionId"]
        at_limit = bytes(MAX_AUDIO // 4 * 3)  # base64 of exactly MAX_AUDIO characters
        params = audio(session, at_limit)
        assert len(params["audioBase64"]) == MAX_AUDIO
        assert await client.call("audio", params) == {"ok": True}
        params["audioBase64"] += "AAAA"
        with pytest.raises(RelayRefused) as refused:
            await client.call("audio", params)
        assert refused.value.message == FRAME_TOO_LARGE
        # Oversized frames are refused before the session is even looked up.
        with pytest.raises(RelayRefused) as refused:
            await client.call("audio", {**params, "relaySessionId": "no-such-session"})
        assert refused.value.message == FRAME_TOO_LARGE
        await client.wait_event(lambda e: e["type"] == "inputAudio" and e["byteLength"] == len(at_limit))
        assert [e["byteLength"] for e in client.of(session, "inputAudio")] == [len(at_limit)]  # refused frames reached nothing


async def test_unknown_sessions_and_other_connections_sessions_are_unknown(live, cookie):
    owner = await RelayClient.open(live, cookie)
    stranger = await RelayClient.open(live, await asession_cookie("other-staff"))
    try:
        session = (await owner.create())["relaySessionId"]
        await owner.wait_event(lambda e: e["type"] == "ready")
        for method, params in [
            ("audio", audio(session, silence_pcm(20))),
            ("toolResult", {"relaySessionId": session, "callId": "call-1", "result": {}}),
            ("cancel", {"relaySessionId": session}),
            ("stop", {"relaySessionId": session}),
            ("audio", audio("not-a-session", silence_pcm(20))),
        ]:
            with pytest.raises(RelayRefused) as refused:
                await stranger.call(method, params)
            assert refused.value.message == UNKNOWN_SESSION, method
        assert not stranger.events  # nothing of the owner's session reaches another connection
        # The stranger's tries ended nothing: the owner's session is still its own.
        assert await owner.call("audio", audio(session, silence_pcm(20))) == {"ok": True}
        assert not owner.of(session, "close")
        with pytest.raises(RelayRefused) as refused:
            await owner.call("toolResult", {"relaySessionId": session, "callId": "never-asked", "result": {}})
        assert refused.value.message == UNKNOWN_TOOL_CALL
    finally:
        await owner.close()
        await stranger.close()


async def test_stop_closes_the_session_as_completed(live, cookie):
    async with await RelayClient.open(live, cookie) as client:
        session = (await client.create())["relaySessionId"]
        assert await client.call("stop", {"relaySessionId": session}) == {"ok": True}
        closed = await client.wait_event(lambda e: e["type"] == "close")
        assert closed == {"relaySessionId": session, "type": "close", "reason": "completed"}
        with pytest.raises(RelayRefused) as refused:
            await client.call("audio", audio(session, silence_pcm(20)))
        assert refused.value.message == UNKNOWN_SESSION


async def test_a_session_expires_after_its_ttl(short_lived, cookie):
    async with await RelayClient.open(short_lived, cookie) as client:
        started = time.time() * 1000
        created = await client.create()
        session = created["relaySessionId"]
        assert started + 900 <= created["expiresAt"] <= time.time() * 1000 + 1100
        closed = await client.wait_event(lambda e: e["type"] == "close", timeout=5)
        assert closed["reason"] == "completed" and closed["relaySessionId"] == session
        assert time.time() * 1000 >= created["expiresAt"] - 50
        with pytest.raises(RelayRefused) as refused:
            await client.call("audio", audio(session, silence_pcm(20)))
        assert refused.value.message == UNKNOWN_SESSION


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("not json", "A relay request must be a JSON object"),
        ("[1, 2]", "A relay request must be a JSON object"),
        ("[" * 100_000 + "]" * 100_000, "A relay request must be a JSON object"),
        (json.dumps({"method": "create"}), "A relay request needs an id: a number or a short string"),
        (json.dumps({"id": True, "method": "create"}), "A relay request needs an id: a number or a short string"),
        (json.dumps({"id": 7, "method": "dance"}), "Unknown relay method; use one of create, audio, toolResult, cancel, stop"),
        (json.dumps({"id": 7, "method": "create", "params": []}), "params must be a JSON object"),
        (json.dumps({"id": 7, "method": "create", "params": {"voice": "no spaces"}}), "voice must be a name of letters, digits and . _ : - (at most 64)"),
        (json.dumps({"id": 7, "method": "audio", "params": {"relaySessionId": "x", "audioBase64": "@@@@"}}), "audioBase64 is not valid base64"),
        (json.dumps({"id": 7, "method": "audio", "params": {"relaySessionId": "x", "audioBase64": "AA=="}}), "audioBase64 must hold whole PCM16 samples (an even number of bytes)"),
        (json.dumps({"id": 7, "method": "audio", "params": {"audioBase64": "AAAA"}}), "relaySessionId must be the id create returned"),
        (json.dumps({"id": 7, "method": "toolResult", "params": {"relaySessionId": "x", "callId": "c"}}), "toolResult needs a result"),
        (json.dumps({"id": "abc", "method": "cancel", "params": {"relaySessionId": "x", "reason": 5}}), "reason must be a string of at most 200 characters"),
    ],
)
async def test_bad_requests_get_a_clear_answer_and_the_socket_stays_open(live, cookie, frame, message):
    async with await RelayClient.open(live, cookie) as client:
        request_id = json.loads(frame).get("id") if frame.startswith("{") else None
        if isinstance(request_id, bool):
            request_id = None  # not an id: the error cannot name it
        reply = await client.send_raw(frame, request_id)
        assert reply == {"id": request_id, "error": {"message": message}}
        assert (await client.create())["relaySessionId"]  # still serving this socket


async def test_binary_frames_are_refused(live, cookie):
    async with await RelayClient.open(live, cookie) as client:
        reply = await client.send_raw(b"\x00\x01", None)
        assert reply == {"id": None, "error": {"message": "Relay frames are JSON text, not binary"}}


async def test_a_request_the_relay_fails_on_is_answered_and_the_socket_stays(daphne, cookie):
    # A broken setting (manage.py check reports it as mediastream.E030) fails each request, not the socket.
    with relay_server(daphne, {"TALK": {"MAX_SESSIONS": 0}}, name="talk-broken") as broken:
        async with await RelayClient.open(broken, cookie) as client:
            for _ in range(2):
                with pytest.raises(RelayRefused) as refused:
                    await client.create()
                assert refused.value.message == "The relay failed on this request; the server log says why"
        assert 'MEDIASTREAM["TALK"]["MAX_SESSIONS"] must be a positive integer' in broken.log_tail(80)
