"""The OpenAI Realtime API as a speech agent: the caller's mu-law in, the model's mu-law out.

One WebSocket per call (``{BASE_URL}?model=MODEL``, ``Authorization: Bearer``).
On open the session is configured with ``session.update``: ``audio/pcmu``
both ways (Twilio's 8 kHz G.711 bytes pass through untouched), server VAD
(the model hears the caller start and stop, and answers by itself), caller
transcription, the instructions, the voice and the tools; the session is
ready on ``session.updated``. Then the conversation so far is replayed as
items (a stream that restarts keeps its context) or, on a new call, the
greeting is asked for with ``response.create``.

Server events become :data:`~mediastream.agents.base.SpeechEvent` objects:

=================================================  ============================
``response.output_audio.delta``                    :class:`AudioDelta`
``response.output_audio_transcript.delta/.done``   :class:`Transcript` (assistant)
``conversation.item.input_audio_transcription.*``  :class:`Transcript` (user)
``input_audio_buffer.speech_started``              :class:`CallerSpeechStarted`
``response.function_call_arguments.done``          :class:`ToolCallRequest`
``response.done``                                  :class:`ResponseDone`
``error``                                          :class:`SpeechError`
=================================================  ============================

Client actions: ``input_audio_buffer.append`` (audio, coalesced), ``response.cancel``,
``conversation.item.truncate`` (``audio_end_ms``: what the caller heard),
``conversation.item.create`` with a ``function_call_output`` then
``response.create``. ``PROTOCOL="beta"`` speaks the earlier beta shape
(``input_audio_format: "g711_ulaw"``, ``response.audio.delta``, the
``OpenAI-Beta: realtime=v1`` header) for servers that still use it; events of
both shapes are understood either way.

A session opened with ``audio_format="pcm16"`` (the browser talk relay) sends
and receives 16-bit PCM, mono, 24 kHz little-endian instead (``audio/pcm`` at
rate 24000; ``pcm16`` in the beta shape): its :class:`AudioDelta` and
``send_audio`` bytes are then PCM16, the model's native format, so nothing is
resampled. Phone calls keep ``"pcmu"``, the default.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal

from django.core.exceptions import ImproperlyConfigured
from websockets.asyncio.client import ClientConnection, connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from voicecall.logsafe import sanitize

from .base import (
    AgentError,
    AudioDelta,
    BaseSpeechAgent,
    BaseSpeechSession,
    CallContext,
    CallerSpeechStarted,
    ChatMessage,
    ResponseDone,
    SpeechError,
    SpeechEvent,
    ToolCall,
    ToolCallRequest,
    Transcript,
)
from .tools import Tool

__all__ = ["RealtimeAgent", "RealtimeSession"]

logger = logging.getLogger(__name__)

DEFAULT_URL = "wss://api.openai.com/v1/realtime"
#: Caller audio held while the socket is busy or not yet ready: 5 s of 8 kHz mu-law.
MAX_QUEUED_AUDIO_BYTES = 40_000
#: One ``input_audio_buffer.append`` carries at most this much queued audio (100 ms).
MAX_APPEND_BYTES = 800
AudioFormat = Literal["pcmu", "pcm16"]
#: The session audio formats: 8 kHz mu-law (1 byte a sample), 24 kHz PCM16 (2 bytes a sample).
AUDIO_FORMATS: tuple[AudioFormat, ...] = ("pcmu", "pcm16")
#: Bytes of audio per byte of 8 kHz mu-law, for the same duration (the queue limits above scale by it).
_BYTES_PER_PCMU_BYTE = {"pcmu": 1, "pcm16": 6}
MAX_ERROR_CHARS = 200

_AUDIO_DELTA = {"response.output_audio.delta", "response.audio.delta"}
_TRANSCRIPT_DELTA = {"response.output_audio_transcript.delta", "response.audio_transcript.delta"}
_TRANSCRIPT_DONE = {"response.output_audio_transcript.done", "response.audio_transcript.done"}
_CALLER_DELTA = "conversation.item.input_audio_transcription.delta"
_CALLER_DONE = "conversation.item.input_audio_transcription.completed"
_CALLER_FAILED = "conversation.item.input_audio_transcription.failed"
#: Errors that answer our own race with the server (cancelling a response that just ended).
_BENIGN_ERROR_CODES = {"response_cancel_not_active"}


class RealtimeAgent(BaseSpeechAgent):
    """Speech to speech over the OpenAI Realtime API; one :class:`RealtimeSession` per call.

    OPTIONS: ``API_KEY`` (default ``OPENAI_API_KEY``), ``BASE_URL``
    (``wss://api.openai.com/v1/realtime``), ``MODEL`` (``gpt-realtime``),
    ``VOICE`` (``alloy``), ``INSTRUCTIONS``, ``GREETING``, ``TOOLS``,
    ``TOOL_TIMEOUT``, ``TRANSCRIPTION_MODEL`` (caller transcripts;
    None: none), ``VAD_THRESHOLD``, ``PREFIX_PADDING_MS``,
    ``SILENCE_DURATION_MS``, ``CONNECT_TIMEOUT`` (seconds until the session
    is configured), ``PROTOCOL`` ("ga" or "beta").
    """

    def __init__(
        self,
        *,
        API_KEY: str | None = None,
        BASE_URL: str = DEFAULT_URL,
        MODEL: str = "gpt-realtime",
        VOICE: str = "alloy",
        INSTRUCTIONS: str = "",
        GREETING: str = "",
        TOOLS: Sequence[Any] = (),
        TOOL_TIMEOUT: float = 10.0,
        TRANSCRIPTION_MODEL: str | None = "gpt-4o-mini-transcribe",
        VAD_THRESHOLD: float = 0.5,
        PREFIX_PADDING_MS: int = 300,
        SILENCE_DURATION_MS: int = 500,
        CONNECT_TIMEOUT: float = 10.0,
        PROTOCOL: Literal["ga", "beta"] = "ga",
    ) -> None:
        super().__init__(INSTRUCTIONS=INSTRUCTIONS, GREETING=GREETING, TOOLS=TOOLS, TOOL_TIMEOUT=TOOL_TIMEOUT)
        self.api_key = API_KEY or os.environ.get("OPENAI_API_KEY", "")
        if not self.api_key and BASE_URL.startswith(DEFAULT_URL):
            raise ImproperlyConfigured(
                "RealtimeAgent needs an API key for OpenAI: set "
                'MEDIASTREAM["AGENT"]["OPTIONS"]["API_KEY"] or the OPENAI_API_KEY environment variable.'
            )
        if PROTOCOL not in ("ga", "beta"):
            raise ValueError(f'PROTOCOL must be "ga" or "beta", got {PROTOCOL!r}')
        if isinstance(CONNECT_TIMEOUT, bool) or not isinstance(CONNECT_TIMEOUT, (int, float)) or CONNECT_TIMEOUT <= 0:
            raise ValueError(f"CONNECT_TIMEOUT must be a positive number of seconds, got {CONNECT_TIMEOUT!r}")
        self.url = BASE_URL + ("&" if "?" in BASE_URL else "?") + f"model={MODEL}"
        self.model = MODEL
        self.voice = VOICE
        self.transcription_model = TRANSCRIPTION_MODEL
        self.turn_detection = {
            "type": "server_vad",
            "threshold": VAD_THRESHOLD,
            "prefix_padding_ms": PREFIX_PADDING_MS,
            "silence_duration_ms": SILENCE_DURATION_MS,
        }
        self.connect_timeout = float(CONNECT_TIMEOUT)
        self.protocol = PROTOCOL

    #: The audio formats :meth:`open_session` takes.
    audio_formats = AUDIO_FORMATS

    def open_session(
        self,
        *,
        call: CallContext,
        tools: Sequence[Any] | None = None,
        history: Sequence[ChatMessage] = (),
        audio_format: AudioFormat = "pcmu",
    ) -> RealtimeSession:
        if audio_format not in AUDIO_FORMATS:
            raise ValueError(f"audio_format must be one of {AUDIO_FORMATS}, got {audio_format!r}")
        return RealtimeSession(
            self, call=call, tools=self.tools if tools is None else tools, history=history, audio_format=audio_format
        )

    def with_options(
        self, *, instructions: str | None = None, voice: str | None = None, model: str | None = None
    ) -> RealtimeAgent:
        """A copy of this agent with other instructions, voice or model (one browser session's choice)."""
        agent = copy.copy(self)
        if instructions is not None:
            agent.instructions = instructions
        if voice is not None:
            agent.voice = voice
        if model is not None:
            agent.model = model
            agent.url = self.url.rsplit(f"model={self.model}", 1)[0] + f"model={model}"
        return agent

    # --- the wire format --------------------------------------------------------------------------------

    def session_config(self, tools: Sequence[Any], audio_format: AudioFormat = "pcmu") -> dict[str, Any]:
        """The ``session`` of the ``session.update`` this agent sends."""
        functions = [{"type": "function", **_spec(tool)} for tool in tools]
        if self.protocol == "beta":
            beta_format = "g711_ulaw" if audio_format == "pcmu" else "pcm16"
            session: dict[str, Any] = {
                "modalities": ["audio", "text"],
                "instructions": self.instructions,
                "voice": self.voice,
                "input_audio_format": beta_format,
                "output_audio_format": beta_format,
                "turn_detection": self.turn_detection,
            }
            if self.transcription_model:
                session["input_audio_transcription"] = {"model": self.transcription_model}
        else:
            wire = {"type": "audio/pcmu"} if audio_format == "pcmu" else {"type": "audio/pcm", "rate": 24000}
            audio_in: dict[str, Any] = {"format": dict(wire), "turn_detection": self.turn_detection}
            if self.transcription_model:
                audio_in["transcription"] = {"model": self.transcription_model}
            session = {
                "type": "realtime",
                "model": self.model,
                "instructions": self.instructions,
                "output_modalities": ["audio"],
                "audio": {"input": audio_in, "output": {"format": dict(wire), "voice": self.voice}},
            }
        if functions:
            session["tools"] = functions
            session["tool_choice"] = "auto"
        return session

    def history_item(self, message: ChatMessage) -> dict[str, Any] | None:
        """A past message as a conversation item (tool steps are not replayed)."""
        if message.role == "user" and message.text:
            return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": message.text}]}
        if message.role == "assistant" and message.content:
            kind = "text" if self.protocol == "beta" else "output_text"
            return {"type": "message", "role": "assistant", "content": [{"type": kind, "text": message.content}]}
        return None

    def headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        if self.protocol == "beta":
            headers["OpenAI-Beta"] = "realtime=v1"
        return headers

    def clean(self, text: str) -> str:
        if self.api_key:
            text = text.replace(self.api_key, "***")
        return sanitize(text, MAX_ERROR_CHARS)


def _spec(tool: Any) -> dict[str, Any]:
    spec = tool.spec() if isinstance(tool, Tool) else dict(tool)
    spec.pop("client", None)
    return spec


class RealtimeSession(BaseSpeechSession):
    """One call's Realtime connection. ``events()`` is meant for one reader."""

    def __init__(
        self,
        agent: RealtimeAgent,
        *,
        call: CallContext,
        tools: Sequence[Any],
        history: Sequence[ChatMessage],
        audio_format: AudioFormat = "pcmu",
    ) -> None:
        self.agent = agent
        self.call = call
        self.tools = list(tools)
        self.history = list(history)
        self.audio_format = audio_format
        scale = _BYTES_PER_PCMU_BYTE[audio_format]
        self._max_queued = MAX_QUEUED_AUDIO_BYTES * scale
        self._max_append = MAX_APPEND_BYTES * scale
        #: Caller audio dropped from the front of a full queue.
        self.dropped_bytes = 0
        self._ws: ClientConnection | None = None
        self._audio: deque[bytes] = deque()
        self._queued = 0
        self._audio_ready = asyncio.Event()
        self._events: asyncio.Queue[SpeechEvent | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._transcripts: dict[tuple[str, str], str] = {}
        self._closed = False
        self._connected = False

    # --- connecting -------------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open and configure the session (raises :class:`AgentError`); then replay history or greet."""
        if self._closed:
            raise AgentError("OpenAI Realtime session is closed")
        try:
            async with asyncio.timeout(self.agent.connect_timeout):
                self._ws = await ws_connect(
                    self.agent.url,
                    additional_headers=self.agent.headers(),
                    max_size=2**24,
                    compression=None,
                    open_timeout=None,
                )
                try:
                    await self._send({"type": "session.update", "session": self.agent.session_config(self.tools, self.audio_format)})
                except AgentError:
                    pass  # closed at once: the server's error event, read next, says why
                await self._await_session_updated()
        except TimeoutError:
            await self._abort()
            raise AgentError(
                f"OpenAI Realtime did not configure the session within {self.agent.connect_timeout:g}s"
            ) from None
        except InvalidStatus as exc:
            await self._abort()
            raise AgentError(f"OpenAI Realtime refused the connection: HTTP {exc.response.status_code}") from None
        except (OSError, WebSocketException) as exc:
            await self._abort()
            raise AgentError(f"OpenAI Realtime connection failed: {self.agent.clean(f'{type(exc).__name__}: {exc}')}") from None
        except AgentError:
            await self._abort()
            raise
        self._connected = True
        for message in self.history:
            item = self.agent.history_item(message)
            if item is not None:
                await self._send({"type": "conversation.item.create", "item": item})
        self._tasks = [
            asyncio.create_task(self._read(), name=f"realtime-read-{self.call.call_sid}"),
            asyncio.create_task(self._write_audio(), name=f"realtime-audio-{self.call.call_sid}"),
        ]
        if self.agent.greeting and not self.history:
            await self.respond(f"Greet the caller by saying exactly: {self.agent.greeting}")

    async def _await_session_updated(self) -> None:
        assert self._ws is not None
        async for raw in self._ws:
            event = _json(raw)
            kind = event.get("type")
            if kind in ("session.updated", "transcription_session.updated"):
                return
            if kind == "error":
                raise AgentError(f"OpenAI Realtime rejected the session: {self.agent.clean(_error_text(event))}")
        reason = self.agent.clean(f"{self._ws.close_code} {self._ws.close_reason or ''}".strip())
        raise AgentError(f"OpenAI Realtime closed the connection before the session was configured ({reason})")

    # --- client actions ---------------------------------------------------------------------------------

    def send_audio(self, mulaw: bytes) -> None:
        if self._closed or not mulaw:
            return
        self._audio.append(bytes(mulaw))
        self._queued += len(mulaw)
        while self._queued > self._max_queued and len(self._audio) > 1:
            dropped = self._audio.popleft()
            self._queued -= len(dropped)
            self.dropped_bytes += len(dropped)
        self._audio_ready.set()

    async def respond(self, instructions: str = "") -> None:
        await self._send({"type": "response.create", **({"response": {"instructions": instructions}} if instructions else {})})

    async def cancel_response(self) -> None:
        await self._send({"type": "response.cancel"})

    async def truncate(self, item_id: str, audio_end_ms: int) -> None:
        await self._send(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": max(0, int(audio_end_ms)),
            }
        )

    async def send_tool_result(self, call_id: str, output: str) -> None:
        await self._send(
            {"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": call_id, "output": output}}
        )
        await self.respond()

    async def _send(self, event: dict[str, Any]) -> None:
        if self._ws is None or self._closed:
            raise AgentError("OpenAI Realtime session is not connected")
        try:
            await self._ws.send(json.dumps(event, separators=(",", ":")))
        except ConnectionClosed as exc:
            raise AgentError(f"OpenAI Realtime connection closed ({exc.rcvd.code if exc.rcvd else 'no close frame'})") from None

    async def _write_audio(self) -> None:
        while not self._closed:
            await self._audio_ready.wait()
            self._audio_ready.clear()
            while self._audio and not self._closed:
                chunk = bytearray()
                while self._audio and len(chunk) < self._max_append:
                    piece = self._audio.popleft()
                    self._queued -= len(piece)
                    chunk += piece
                audio = base64.b64encode(bytes(chunk)).decode("ascii")
                try:
                    await self._send({"type": "input_audio_buffer.append", "audio": audio})
                except AgentError:
                    return  # the reader reports the lost connection

    # --- server events ----------------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[SpeechEvent]:
        while True:
            event = await self._events.get()
            if event is None:
                return
            yield event

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                for event in self._translate(_json(raw)):
                    self._events.put_nowait(event)
            if not self._closed:
                self._events.put_nowait(SpeechError("OpenAI Realtime closed the connection", fatal=True))
        except ConnectionClosed as exc:
            if not self._closed:
                code = exc.rcvd.code if exc.rcvd else "no close frame"
                self._events.put_nowait(SpeechError(f"OpenAI Realtime connection lost ({code})", fatal=True))
        finally:
            self._events.put_nowait(None)

    def _translate(self, event: dict[str, Any]) -> list[SpeechEvent]:
        kind = event.get("type")
        item = str(event.get("item_id") or "")
        if kind in _AUDIO_DELTA:
            try:
                audio = base64.b64decode(event.get("delta") or "", validate=True)
            except ValueError:
                return [SpeechError("OpenAI Realtime sent audio that is not base64")]
            return [AudioDelta(item, audio)] if audio else []
        if kind in _TRANSCRIPT_DELTA or kind == _CALLER_DELTA:
            role = "user" if kind == _CALLER_DELTA else "assistant"
            text = self._transcripts.get((role, item), "") + str(event.get("delta") or "")
            self._transcripts[(role, item)] = text
            return [Transcript(role, text, False, item)]
        if kind in _TRANSCRIPT_DONE or kind == _CALLER_DONE:
            role = "user" if kind == _CALLER_DONE else "assistant"
            self._transcripts.pop((role, item), None)
            return [Transcript(role, str(event.get("transcript") or ""), True, item)]
        if kind == "input_audio_buffer.speech_started":
            start = event.get("audio_start_ms")
            return [CallerSpeechStarted(item, start if isinstance(start, int) else None)]
        if kind == "response.function_call_arguments.done":
            call_id = str(event.get("call_id") or item)
            return [ToolCallRequest(ToolCall.parse(call_id, str(event.get("name") or ""), str(event.get("arguments") or "")))]
        if kind == "response.done":
            response = event.get("response") or {}
            return [ResponseDone(_message_item(response), str(response.get("status") or "completed"))]
        if kind == _CALLER_FAILED:
            return [SpeechError(f"caller transcription failed: {self.agent.clean(_error_text(event))}")]
        if kind == "error":
            error = event.get("error") or {}
            if isinstance(error, Mapping) and error.get("code") in _BENIGN_ERROR_CODES:
                return []
            return [SpeechError(self.agent.clean(_error_text(event)))]
        return []

    # --- closing ----------------------------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._audio_ready.set()
        for task in self._tasks:
            task.cancel()
        await self._abort()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._events.put_nowait(None)  # a reader cancelled before it ran never said so

    async def _abort(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(), timeout=2.0)
            except (TimeoutError, OSError, WebSocketException):
                ws.transport.abort()


def _message_item(response: Mapping[str, Any]) -> str:
    """The id of the response's spoken item ('' for a response that only called tools)."""
    for output in response.get("output") or ():
        if isinstance(output, Mapping) and output.get("type") == "message":
            return str(output.get("id") or "")
    return ""


def _json(raw: str | bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _error_text(event: Mapping[str, Any]) -> str:
    error = event.get("error")
    if isinstance(error, Mapping):
        text = str(error.get("message") or "unknown error")
        code = error.get("code") or error.get("type")
        return f"{text} ({code})" if code else text
    return str(error or "unknown error")
