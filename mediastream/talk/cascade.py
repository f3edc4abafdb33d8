"""A text agent as a voice: the embedded speech-to-text, the agent, and the embedded text-to-speech.

The browser's audio (PCM16 24 kHz) is resampled to 8 kHz mu-law for the
transcription backend (``MEDIASTREAM["TRANSCRIPTION"]``, Whisper by default,
which cuts utterances with its own VAD) and, when that backend runs no VAD,
for a local :class:`~mediastream.vad.SpeechDetector`. A final transcript is
the end of the user's turn: the agent's reply streams in, is cut into
sentences, and each sentence is synthesized (``MEDIASTREAM["TTS"]``) and sent
as 24 kHz PCM16 while the agent writes the rest. Tools run between rounds
(client tools in the browser); ``end_call`` ends the session once the
goodbye has played.

Barge-in: speech heard while a reply is being written or is still playing
in the browser (estimated by :class:`~.voice.Playhead`) stops the reply and
tells the browser to ``clear`` (with ``MEDIASTREAM["BARGE_IN"]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from voicecall.logsafe import sanitize

from ..agents.base import AgentError, BaseAgent, CallContext, ChatMessage, TextDelta, ToolCall, ToolCallRequest
from ..agents.engine import MAX_TOOL_ROUNDS
from ..audio import AudioFormatError
from ..backends import backends
from ..conf import app_settings
from ..playback.textsplit import SentenceStream, split_text
from ..transcription.base import BaseTranscriptionSession, TranscriptionListener
from ..tts.base import BaseTTSBackend, TTSError
from ..vad import SpeechDetector, SpeechEnded, SpeechStarted
from .pcm import BYTES_PER_SECOND, ToMulaw, ToPcm24, seconds
from .protocol import CreateParams
from .voice import Playhead, Voice, VoiceOutput

__all__ = ["AUDIO_PIECE_SECONDS", "CascadeVoice", "Speaker"]

logger = logging.getLogger(__name__)

#: Synthesized audio goes to the browser in pieces of at most this long.
AUDIO_PIECE_SECONDS = 0.2
_PIECE_BYTES = int(AUDIO_PIECE_SECONDS * BYTES_PER_SECOND)
#: Seconds the transcription session may take to close.
STT_CLOSE_TIMEOUT = 2.0
#: What the model reads for a tool call whose reply the user cut off.
INTERRUPTED_TOOL_OUTPUT = '{"error": "the user interrupted before this tool finished"}'


class Speaker:
    """Synthesizes one reply's sentences in order and sends their audio as it comes."""

    def __init__(self, tts: BaseTTSBackend, output: VoiceOutput, playhead: Playhead) -> None:
        self._tts = tts
        self._output = output
        self._playhead = playhead
        self._timeout = float(app_settings.TTS_SYNTHESIS_TIMEOUT)
        self._sentences: asyncio.Queue[str | None] = asyncio.Queue()
        #: Sentences whose audio has started going to the browser: what the user heard of the reply.
        self.spoken: list[str] = []
        self._task = asyncio.create_task(self._run(), name="talk-relay-speaker")

    def say(self, sentence: str) -> None:
        if sentence.strip():
            self._sentences.put_nowait(sentence.strip())

    async def finish(self) -> None:
        """Wait until everything said so far has been sent."""
        self._sentences.put_nowait(None)
        await self._task

    def cancel(self) -> None:
        self._task.cancel()

    async def _run(self) -> None:
        converter = ToPcm24()
        while (sentence := await self._sentences.get()) is not None:
            try:
                async with asyncio.timeout(self._timeout):
                    async with contextlib.aclosing(self._tts.synthesize(sentence)) as chunks:
                        async for chunk in chunks:
                            pcm = converter.feed_chunk(chunk)
                            if pcm and (not self.spoken or self.spoken[-1] is not sentence):
                                self.spoken.append(sentence)
                            self._send(pcm)
                self._send(converter.flush())
            except TimeoutError:
                converter.flush()
                self._output.error(f"Speech synthesis took longer than {self._timeout:g} s; a sentence was skipped")
            except (TTSError, AudioFormatError) as exc:
                converter.flush()
                self._output.error(sanitize(f"Speech synthesis failed: {exc}", 300))

    def _send(self, pcm: bytes) -> None:
        for start in range(0, len(pcm), _PIECE_BYTES):
            piece = pcm[start : start + _PIECE_BYTES]
            self._playhead.sent(seconds(piece))
            self._output.audio(piece)


class CascadeVoice(Voice):
    provider = "cascade"

    def __init__(self, agent: BaseAgent, *, session_id: str, output: VoiceOutput, options: CreateParams) -> None:
        self.agent = agent
        self.session_id = session_id
        self.output = output
        #: The cascade's TTS has one voice and the agent one model: create's voice and model are not applied.
        self.applied: dict[str, str] = {}
        self.toolbox = agent.toolbox(client_runner=output.client_tool)
        self.history: list[ChatMessage] = [ChatMessage("system", options.instructions)] if options.instructions else []
        self.playhead = Playhead()
        self._to_mulaw = ToMulaw()
        self._stt: BaseTranscriptionSession | None = None
        self._vad: SpeechDetector | None = None
        self._tts: BaseTTSBackend | None = None
        self._reply: _Reply | None = None
        self._turns = 0
        self._closed = False

    # --- Voice ------------------------------------------------------------------------------------

    async def connect(self) -> None:
        backend = backends.transcription
        self._tts = backends.tts
        listener = TranscriptionListener(
            on_partial=self._on_partial,
            on_final=self._on_final,
            on_speech_started=self._on_backend_speech_started,
            on_error=self._on_stt_error,
        )
        self._stt = backend.create_session(stream_sid=self.session_id, call_sid=self.session_id, listener=listener)
        if self._stt.runs_vad:
            self._stt.on_vad_event = self._on_vad
        elif app_settings.VAD.get("ENABLED", True):
            self._vad = SpeechDetector()
        # The ears and the voice load together (Whisper's model, Piper's worker): the first reply pays for neither.
        await asyncio.gather(self._stt.connect(), self._tts.warm_up())
        if not backend.produces_transcripts:
            self.output.error(
                f"The relay cannot hear: the transcription backend {type(backend).__name__} produces no "
                'transcripts; set MEDIASTREAM["TRANSCRIPTION"] to one that does (Whisper is the default).'
            )

    def start(self) -> None:
        if self.agent.greeting:
            self._start_reply(greeting=self.agent.greeting)

    def send_audio(self, pcm: bytes) -> None:
        if self._closed or self._stt is None:
            return
        mulaw = self._to_mulaw.feed(pcm)
        if not mulaw:
            return
        self._stt.send_audio(mulaw)
        if self._vad is not None:
            for vad_event in self._vad.feed(mulaw):
                self._on_vad(vad_event)

    async def cancel(self) -> None:
        self._stop_reply()

    async def close(self) -> None:
        self._closed = True
        reply = self._stop_reply()
        if reply is not None:
            await asyncio.gather(reply, return_exceptions=True)
        if self._stt is not None:
            try:
                await asyncio.wait_for(self._stt.close(), STT_CLOSE_TIMEOUT)
            except Exception:
                logger.warning("Relay session %s: the transcription session did not close cleanly", self.session_id)

    # --- hearing ------------------------------------------------------------------------------------

    def _on_vad(self, vad_event: SpeechStarted | SpeechEnded) -> None:
        if isinstance(vad_event, SpeechStarted):
            self._barge_in()

    def _on_backend_speech_started(self) -> None:
        if self._vad is None and not (self._stt is not None and self._stt.runs_vad):
            self._barge_in()  # no local VAD: the backend's own speech start decides

    def _barge_in(self) -> None:
        if self._closed or not app_settings.BARGE_IN:
            return
        replying = self._reply is not None and not self._reply.task.done()
        if replying or self.playhead.playing():
            self._stop_reply()
            self.output.clear()

    def _on_partial(self, text: str) -> None:
        if not self._closed and text.strip():
            self.output.transcript("user", self._cut(text), False)

    def _on_final(self, text: str, start_ms: int | None = None, end_ms: int | None = None) -> None:
        text = self._cut(text)
        if self._closed or not text:
            return  # a cough: no turn
        self.output.transcript("user", text, True)
        playing = self.playhead.playing()
        if self._stop_reply() is not None or playing:
            self.output.clear()  # a new turn: the last reply stops, written or still playing
        self.history.append(ChatMessage("user", text))
        self._start_reply()

    def _on_stt_error(self, exc: Exception) -> None:
        if not self._closed:
            self.output.error(sanitize(f"Speech recognition failed: {exc}", 300))

    @staticmethod
    def _cut(text: str) -> str:
        return text.strip()[: int(app_settings.MAX_TRANSCRIPT_CHARS)]

    # --- replying -----------------------------------------------------------------------------------

    def _start_reply(self, greeting: str = "") -> None:
        assert self._tts is not None
        self._turns += 1
        reply = _Reply(self._turns, Speaker(self._tts, self.output, self.playhead))
        reply.task = asyncio.create_task(self._run_reply(reply, greeting), name=f"talk-relay-reply:{self.session_id}")
        self._reply = reply

    def _stop_reply(self) -> asyncio.Task[None] | None:
        """Cut the reply being written or sent off now; its task, if it was still running.

        The history and the transcript are settled here, before anything that
        follows (the user's next words) is added: they keep what the user
        heard, and every tool call left waiting gets an answer.
        """
        reply, self._reply = self._reply, None
        self.playhead.reset()
        if reply is None or reply.task.done():
            return None
        reply.speaker.cancel()  # now, not when the reply task next runs: no audio may follow the clear
        reply.task.cancel()
        for call in reply.unanswered:
            self.history.append(ChatMessage("tool", INTERRUPTED_TOOL_OUTPUT, tool_call_id=call.id, name=call.name))
        reply.unanswered = []
        self._end_turn_text(reply, heard=reply.speaker.spoken)
        return reply.task

    async def _run_reply(self, reply: _Reply, greeting: str) -> None:
        speaker = reply.speaker
        end_call = False
        try:
            if greeting:
                reply.said = reply.unrecorded = greeting
                for piece in split_text(greeting, int(app_settings.TTS_MAX_CHARS)):
                    speaker.say(piece)
                self.output.transcript("assistant", greeting.strip(), False)
            else:
                end_call = await self._write(reply)
            await speaker.finish()
        except asyncio.CancelledError:
            speaker.cancel()  # _stop_reply settled the rest
            raise
        except Exception as exc:
            speaker.cancel()
            if isinstance(exc, AgentError):
                logger.warning("Relay session %s: the agent failed: %s", self.session_id, sanitize(str(exc), 200))
                message = f"The agent failed: {exc}"
            else:  # a bug in an agent backend must not end the session
                logger.exception("Relay session %s: the agent's reply crashed", self.session_id)
                message = f"The agent failed: {type(exc).__name__}: {exc}"
            self.output.error(sanitize(message, 300))
            self._end_turn_text(reply, heard=speaker.spoken)
            return
        self._end_turn_text(reply)
        self.output.mark(f"turn-{reply.turn}")
        if end_call:
            await asyncio.sleep(self.playhead.remaining())  # the goodbye plays out first
            self.output.finished("completed")

    def _end_turn_text(self, reply: _Reply, heard: list[str] | None = None) -> None:
        """The reply's text joins the history (what is not there yet) and its transcript line ends; once.

        A reply cut short (``heard``: the sentences whose audio went out) keeps
        only what the user heard, in both.
        """
        if reply.ended:
            return
        reply.ended = True
        said, unrecorded = reply.said, reply.unrecorded
        if heard is not None:
            recorded = " ".join(said[: len(said) - len(unrecorded)].split())
            said = " ".join(" ".join(heard).split())
            unrecorded = said[len(recorded) :] if said.startswith(recorded) else ""
        if unrecorded.strip():
            self.history.append(ChatMessage("assistant", unrecorded.strip()))
        if said.strip() or heard is not None:
            self.output.transcript("assistant", said.strip(), True)

    async def _write(self, reply: _Reply) -> bool:
        """Stream the agent's reply (and its tool rounds) into the reply's speaker; True if a tool ended the session.

        Each round joins the history as it ends (its text, its tool calls and
        their results); ``reply.said`` is the text of all rounds so far and
        ``reply.unrecorded`` that of the round being written.
        """
        call = CallContext(self.session_id, "", reply.turn)
        sentences = SentenceStream(int(app_settings.TTS_MAX_CHARS))
        end_call = False
        for _round in range(MAX_TOOL_ROUNDS):
            requests: list[ToolCallRequest] = []
            reply.unrecorded = ""
            tools = list(self.toolbox.tools.values())
            async with contextlib.aclosing(self.agent.reply(self.history, tools=tools, call=call)) as stream:
                async for item in stream:
                    if type(item) is TextDelta:
                        reply.unrecorded += item.text
                        reply.said += item.text
                        self.output.transcript("assistant", reply.said.strip(), False)
                        for sentence in sentences.feed(item.text):
                            reply.speaker.say(sentence)
                    elif type(item) is ToolCallRequest:
                        requests.append(item)
            for sentence in sentences.flush():
                reply.speaker.say(sentence)
            if not requests:
                break
            if reply.said and not reply.said.endswith(" "):
                reply.said += " "
            text, reply.unrecorded = reply.unrecorded.strip(), ""
            self.history.append(ChatMessage("assistant", text, tool_calls=tuple(r.call for r in requests)))
            reply.unanswered = [r.call for r in requests]
            for request in requests:
                result = await self.toolbox.run(request.call, call)
                reply.unanswered.remove(request.call)
                self.history.append(
                    ChatMessage("tool", result.output, tool_call_id=request.call.id, name=request.call.name)
                )
                end_call = end_call or result.ends_call
        return end_call


class _Reply:
    """One reply of the agent: its task, its speaker, and its text (kept per reply, so a cut-off one never
    touches the next)."""

    __slots__ = ("turn", "speaker", "task", "said", "unrecorded", "unanswered", "ended")

    def __init__(self, turn: int, speaker: Speaker) -> None:
        self.turn = turn
        self.speaker = speaker
        self.task: asyncio.Task[None]
        #: All the reply's text so far, and the part of it not in the history yet.
        self.said = ""
        self.unrecorded = ""
        #: Tool calls in the history still waiting for their result.
        self.unanswered: list[ToolCall] = []
        self.ended = False
