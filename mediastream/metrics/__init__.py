"""The Prometheus metrics of the media streams: every name, type and label, defined once here.

Nothing here runs per inbound frame: the frame counters are per-stream plain
integers (:mod:`mediastream.stats`) whose deltas a stream's
:class:`~mediastream.metrics.meter.StreamMeter` adds at each health tick and at
its end; latencies are observed from the stream events that already carry
them. Labels have bounded values only (a refusal reason from
:mod:`mediastream.closing`, a backend class, a stage), never a call or stream SID.

With ``PROMETHEUS_MULTIPROC_DIR`` set before the process starts, prometheus_client
keeps every value in per-process files in that directory and the endpoint
(:mod:`mediastream.metrics.views`) sums them over the host's processes; the
gauges count live processes only (``livesum``).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "STREAMS_LIVE",
    "STREAMS_PENDING",
    "REFUSALS",
    "FRAMES_IN",
    "FRAMES_OUT",
    "SEQUENCE_GAPS",
    "BARGE_IN_LATENCY",
    "MARK_ROUND_TRIP",
    "VOICE_TO_VOICE",
    "VOICE_TO_VOICE_STAGE",
    "STT_FINAL_LATENCY",
    "TTS_FIRST_AUDIO",
    "PLAYBACK_QUEUE_DEPTH",
    "VENDOR_ERRORS",
    "VENDOR_RECONNECTS",
    "Stage",
]

#: Seconds, for every latency: from a few tens of ms (a mark echo on loopback) to a slow vendor.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class Stage:
    """The ``stage`` label of :data:`VOICE_TO_VOICE_STAGE`: one step of a turn, in order."""

    STT = "stt"  # the caller's end of speech -> the turn starts (its final, and any end-of-turn wait)
    AGENT_FIRST_TOKEN = "agent_first_token"  # the turn starts -> the agent's first token
    TTS_FIRST_AUDIO = "tts_first_audio"  # the first token -> the reply's first audio frame sent


STREAMS_LIVE = Gauge(
    "mediastream_streams_live",
    "Media streams admitted and streaming (their parts up).",
    multiprocess_mode="livesum",
)
STREAMS_PENDING = Gauge(
    "mediastream_streams_pending",
    "Accepted media stream sockets that have not sent an accepted start yet.",
    multiprocess_mode="livesum",
)
REFUSALS = Counter(
    "mediastream_refusals_total",
    "Media stream sockets refused at the handshake or closed before their stream was admitted, by reason.",
    ["reason"],
)
FRAMES_IN = Counter("mediastream_media_frames_in_total", "Inbound media frames of admitted streams.")
FRAMES_OUT = Counter("mediastream_media_frames_out_total", "Outbound 20 ms media frames sent to Twilio.")
SEQUENCE_GAPS = Counter(
    "mediastream_sequence_gaps_total", "Inbound sequenceNumbers skipped (messages Twilio sent that never arrived)."
)
BARGE_IN_LATENCY = Histogram(
    "mediastream_barge_in_latency_seconds",
    "Caller speech over playing audio: its start (stream audio time) -> the playing item interrupted.",
    buckets=LATENCY_BUCKETS,
)
MARK_ROUND_TRIP = Histogram(
    "mediastream_mark_round_trip_seconds",
    "How late Twilio echoed a mark after the audio before it should have played out (the latest, at each health tick).",
    buckets=LATENCY_BUCKETS,
)
VOICE_TO_VOICE = Histogram(
    "mediastream_voice_to_voice_seconds",
    "A spoken turn: the caller's end of speech -> the agent's first audio frame sent.",
    buckets=LATENCY_BUCKETS,
)
VOICE_TO_VOICE_STAGE = Histogram(
    "mediastream_voice_to_voice_stage_seconds",
    "The stages of voice-to-voice latency, per turn that sent audio (stage: stt, agent_first_token, tts_first_audio).",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
STT_FINAL_LATENCY = Histogram(
    "mediastream_stt_final_latency_seconds",
    "The caller's end of speech (the transcript's end_ms) -> its final transcript, by transcription backend.",
    ["backend"],
    buckets=LATENCY_BUCKETS,
)
TTS_FIRST_AUDIO = Histogram(
    "mediastream_tts_first_audio_seconds",
    "A text piece handed to the TTS backend -> its first audio chunk, by TTS backend.",
    ["backend"],
    buckets=LATENCY_BUCKETS,
)
PLAYBACK_QUEUE_DEPTH = Gauge(
    "mediastream_playback_queue_depth",
    "Playback items waiting behind the playing one, all streams (sampled at each stream's health tick).",
    multiprocess_mode="livesum",
)
VENDOR_ERRORS = Counter(
    "mediastream_vendor_errors_total",
    "Speech and agent vendor failures (vendor: stt, tts, agent; backend: its class).",
    ["vendor", "backend"],
)
VENDOR_RECONNECTS = Counter(
    "mediastream_vendor_reconnects_total",
    "Vendor WebSocket sessions reopened after the vendor dropped them (vendor: stt; backend: the provider).",
    ["vendor", "backend"],
)
