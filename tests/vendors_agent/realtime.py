"""A local OpenAI Realtime endpoint (speech to speech), speaking the documented event protocol.

On connect it sends ``session.created``; ``session.update`` is answered with
``session.updated`` when the session is valid for the protocol it serves
(``protocol="ga"``: ``session.type`` "realtime", formats under
``audio.input/output.format``; ``"beta"``: ``input_audio_format`` and
``output_audio_format``), else with an ``error`` event. A wrong bearer token
gets an ``invalid_api_key`` error and the connection is closed.

What the client does is recorded on its :class:`VendorConnection`
(``of_type(...)``, :meth:`FakeRealtime.audio`). The test plays the server's
part with:

* :meth:`caller_turn`: what server VAD does when the caller speaks a sentence
  (``speech_started``, ``speech_stopped``, ``committed``, the caller's
  transcript), then a response, like ``create_response: true``;
* :meth:`speech_started` alone (barge-in);
* responses follow ``plans`` (one per ``response.create`` or caller turn,
  default: :data:`DEFAULT_PLAN`): :class:`Speak` streams mu-law audio in
  ``chunk_bytes`` deltas with the transcript, :class:`CallTool` a function
  call. ``hold``: every spoken response stops after its first audio delta
  until the event is set (``first_audio_sent`` is set then), so a test can
  cancel it mid-way; a cancelled response ends with ``status: "cancelled"``.
* ``conversation.item.truncate`` is answered with ``conversation.item.truncated``;
  ``conversation.item.create`` with ``conversation.item.added``.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tests.vendors_stt import FakeVendorServer, VendorConnection

__all__ = ["CallTool", "DEFAULT_PLAN", "FakeRealtime", "Speak"]


@dataclass(frozen=True)
class Speak:
    transcript: str
    audio: bytes


@dataclass(frozen=True)
class CallTool:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    call_id: str = ""


DEFAULT_PLAN = Speak("Hello from the fake model.", bytes(range(0, 256)) * 4)


class FakeRealtime(FakeVendorServer):
    path = "/v1/realtime"

    def __init__(
        self,
        *,
        api_key: str = "sk-test-key",
        protocol: str = "ga",
        plans: list[Speak | CallTool] | None = None,
        chunk_bytes: int = 320,
        hold: asyncio.Event | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.api_key = api_key
        self.protocol = protocol
        self.plans: deque[Speak | CallTool] = deque(plans or ())
        self.chunk_bytes = chunk_bytes
        self.hold = hold
        self.first_audio_sent = asyncio.Event()
        self._ids = itertools.count(1)
        self._active: dict[int, asyncio.Task[None]] = {}
        self._cancelled: set[int] = set()

    async def __aexit__(self, *exc_info: Any) -> None:
        if self.hold is not None:
            self.hold.set()  # never leave a response parked on a test's event
        for task in list(self._active.values()):
            task.cancel()
        await asyncio.gather(*self._active.values(), return_exceptions=True)
        await super().__aexit__(*exc_info)

    def next_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):04d}"

    # --- what the client sent ---------------------------------------------------------------------

    @staticmethod
    def audio(conn: VendorConnection) -> bytes:
        return b"".join(base64.b64decode(m["audio"]) for m in conn.of_type("input_audio_buffer.append"))

    # --- the protocol -----------------------------------------------------------------------------

    async def on_connect(self, conn: VendorConnection) -> None:
        if conn.headers.get("authorization") != f"Bearer {self.api_key}":
            await self.send(_error("Incorrect API key provided.", "invalid_api_key", "invalid_request_error"), conn)
            await conn.ws.close(3000, "invalid_api_key")
            return
        if self.protocol == "beta" and conn.headers.get("openai-beta") != "realtime=v1":
            await self.send(_error("This endpoint serves the beta protocol (OpenAI-Beta: realtime=v1).", "beta_required"), conn)
        await self.send({"type": "session.created", "event_id": self.next_id("event"), "session": {"id": "sess_1"}}, conn)

    async def on_message(self, conn: VendorConnection, message: str | bytes) -> None:
        if not isinstance(message, str):
            return
        event = json.loads(message)
        kind = event.get("type")
        if kind == "session.update":
            problem = self._invalid_session(event.get("session") or {})
            if problem:
                await self.send(_error(problem, "invalid_value"), conn)
            else:
                await self.send({"type": "session.updated", "event_id": self.next_id("event"), "session": event["session"]}, conn)
        elif kind == "response.create":
            self._start_response(conn)
        elif kind == "response.cancel":
            if not self._active:
                await self.send(_error("Cancellation failed: no active response found", "response_cancel_not_active"), conn)
            for key, task in list(self._active.items()):
                self._cancelled.add(key)
                if self.hold is not None:
                    self.hold.set()
        elif kind == "conversation.item.truncate":
            await self.send(
                {
                    "type": "conversation.item.truncated",
                    "event_id": self.next_id("event"),
                    "item_id": event.get("item_id"),
                    "content_index": event.get("content_index", 0),
                    "audio_end_ms": event.get("audio_end_ms"),
                },
                conn,
            )
        elif kind == "conversation.item.create":
            item = {**(event.get("item") or {}), "id": self.next_id("item")}
            await self.send({"type": "conversation.item.added", "event_id": self.next_id("event"), "item": item}, conn)

    def _invalid_session(self, session: dict[str, Any]) -> str:
        if self.protocol == "beta":
            if session.get("input_audio_format") != "g711_ulaw" or session.get("output_audio_format") != "g711_ulaw":
                return "this fake expects g711_ulaw both ways"
            return ""
        if session.get("type") != "realtime":
            return "Missing required parameter: 'session.type'."
        audio = session.get("audio") or {}
        formats = [audio.get(side, {}).get("format", {}).get("type") for side in ("input", "output")]
        if formats != ["audio/pcmu", "audio/pcmu"]:
            return f"this fake expects audio/pcmu both ways, got {formats}"
        for tool in session.get("tools") or ():
            if tool.get("type") != "function" or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", str(tool.get("name"))):
                return f"Invalid tool {tool!r}"
        return ""

    # --- acting as the server's VAD and model -------------------------------------------------------

    async def speech_started(self, item_id: str = "", audio_start_ms: int = 0) -> str:
        item_id = item_id or self.next_id("item")
        await self.send({"type": "input_audio_buffer.speech_started", "event_id": self.next_id("event"), "audio_start_ms": audio_start_ms, "item_id": item_id})
        return item_id

    async def caller_turn(self, transcript: str, *, respond: bool = True) -> str:
        item_id = await self.speech_started()
        for event in (
            {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 1200, "item_id": item_id},
            {"type": "input_audio_buffer.committed", "previous_item_id": None, "item_id": item_id},
            {"type": "conversation.item.input_audio_transcription.delta", "item_id": item_id, "content_index": 0, "delta": transcript[: len(transcript) // 2]},
            {"type": "conversation.item.input_audio_transcription.completed", "item_id": item_id, "content_index": 0, "transcript": transcript},
        ):
            await self.send({**event, "event_id": self.next_id("event")})
        if respond:
            self._start_response(self.connection)
        return item_id

    def _start_response(self, conn: VendorConnection) -> None:
        plan = self.plans.popleft() if self.plans else DEFAULT_PLAN
        key = next(self._ids)
        task = asyncio.create_task(self._respond(conn, key, plan))
        self._active[key] = task
        task.add_done_callback(lambda _t: self._active.pop(key, None))

    async def _respond(self, conn: VendorConnection, key: int, plan: Speak | CallTool) -> None:
        response_id = f"resp_{key:04d}"
        names = _names(self.protocol)

        async def send(event: dict[str, Any]) -> None:
            await self.send({**event, "event_id": self.next_id("event")}, conn)

        await send({"type": "response.created", "response": {"id": response_id, "object": "realtime.response", "status": "in_progress", "output": []}})
        if isinstance(plan, CallTool):
            item = {"id": self.next_id("item"), "type": "function_call", "status": "in_progress", "name": plan.name, "call_id": plan.call_id or self.next_id("call"), "arguments": ""}
            arguments = json.dumps(plan.arguments)
            await send({"type": "response.output_item.added", "response_id": response_id, "output_index": 0, "item": item})
            half = len(arguments) // 2
            for piece in (arguments[:half], arguments[half:]):
                await send({"type": "response.function_call_arguments.delta", "response_id": response_id, "item_id": item["id"], "output_index": 0, "call_id": item["call_id"], "delta": piece})
            await send({"type": "response.function_call_arguments.done", "response_id": response_id, "item_id": item["id"], "output_index": 0, "call_id": item["call_id"], "name": plan.name, "arguments": arguments})
            done = {**item, "status": "completed", "arguments": arguments}
            await send({"type": "response.output_item.done", "response_id": response_id, "output_index": 0, "item": done})
            await send({"type": "response.done", "response": {"id": response_id, "status": "completed", "output": [done]}})
            return
        item_id = self.next_id("item")
        item = {"id": item_id, "object": "realtime.item", "type": "message", "status": "in_progress", "role": "assistant", "content": []}
        where = {"response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0}
        await send({"type": "response.output_item.added", "response_id": response_id, "output_index": 0, "item": item})
        await send({"type": "response.content_part.added", **where, "part": {"type": "audio", "transcript": ""}})
        words = re.findall(r"\S+\s*", plan.transcript)
        chunks = [plan.audio[i : i + self.chunk_bytes] for i in range(0, len(plan.audio), self.chunk_bytes)]
        status = "completed"
        for index, chunk in enumerate(chunks):
            if key in self._cancelled:
                status = "cancelled"
                break
            await send({"type": names["audio"], **where, "delta": base64.b64encode(chunk).decode()})
            if index < len(words):
                await send({"type": names["transcript"], **where, "delta": words[index]})
            if index == 0:
                self.first_audio_sent.set()
                if self.hold is not None:
                    await self.hold.wait()
        if key in self._cancelled:
            status = "cancelled"
        if status == "completed":
            await send({"type": names["audio_done"], **where})
            await send({"type": names["transcript_done"], **where, "transcript": plan.transcript})
        done = {**item, "status": "completed" if status == "completed" else "incomplete"}
        await send({"type": "response.output_item.done", "response_id": response_id, "output_index": 0, "item": done})
        await send({"type": "response.done", "response": {"id": response_id, "status": status, "output": [done]}})


def _names(protocol: str) -> dict[str, str]:
    if protocol == "beta":
        return {
            "audio": "response.audio.delta",
            "audio_done": "response.audio.done",
            "transcript": "response.audio_transcript.delta",
            "transcript_done": "response.audio_transcript.done",
        }
    return {
        "audio": "response.output_audio.delta",
        "audio_done": "response.output_audio.done",
        "transcript": "response.output_audio_transcript.delta",
        "transcript_done": "response.output_audio_transcript.done",
    }


def _error(message: str, code: str, type_: str = "invalid_request_error") -> dict[str, Any]:
    return {"type": "error", "event_id": "event_err", "error": {"type": type_, "code": code, "message": message, "param": None, "event_id": None}}
