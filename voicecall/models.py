"""Call records: what Twilio told us about each call and what happened on its streams."""

from __future__ import annotations

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

__all__ = [
    "CallStatus",
    "AnsweredBy",
    "Call",
    "MediaStream",
    "TranscriptSegment",
    "CallEvent",
    "WebhookReceipt",
    "Recording",
    "PacingSlot",
]


class CallStatus(models.TextChoices):
    """Twilio's ``CallStatus`` values."""

    INITIATED = "initiated", _("initiated")
    QUEUED = "queued", _("queued")
    RINGING = "ringing", _("ringing")
    IN_PROGRESS = "in-progress", _("in progress")
    COMPLETED = "completed", _("completed")
    BUSY = "busy", _("busy")
    FAILED = "failed", _("failed")
    NO_ANSWER = "no-answer", _("no answer")
    CANCELED = "canceled", _("canceled")


class AnsweredBy(models.TextChoices):
    """Twilio's ``AnsweredBy`` values from answering-machine detection."""

    HUMAN = "human", _("human")
    MACHINE_START = "machine_start", _("machine (greeting started)")
    MACHINE_END_BEEP = "machine_end_beep", _("machine (after the beep)")
    MACHINE_END_SILENCE = "machine_end_silence", _("machine (greeting ended in silence)")
    MACHINE_END_OTHER = "machine_end_other", _("machine (greeting ended)")
    FAX = "fax", _("fax")
    UNKNOWN = "unknown", _("unknown")


TERMINAL_STATUSES = frozenset(
    {CallStatus.COMPLETED, CallStatus.BUSY, CallStatus.FAILED, CallStatus.NO_ANSWER, CallStatus.CANCELED}
)


class Call(models.Model):
    call_sid = models.CharField(_("call SID"), max_length=64, unique=True, help_text="e.g. CA0123…")
    account_sid = models.CharField(_("account SID"), max_length=64, blank=True)
    direction = models.CharField(
        max_length=32, blank=True, help_text="inbound, outbound-api or outbound-dial"
    )
    from_number = models.CharField(_("from"), max_length=64, blank=True, db_index=True)
    to_number = models.CharField(_("to"), max_length=64, blank=True, db_index=True)
    status = models.CharField(
        max_length=16, choices=CallStatus.choices, default=CallStatus.QUEUED, db_index=True
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    duration = models.PositiveIntegerField(
        null=True, blank=True, help_text="Seconds, from Twilio's CallDuration."
    )
    last_sequence_number = models.IntegerField(
        null=True, blank=True, help_text="SequenceNumber of the last status callback applied."
    )
    stream_token_hash = models.CharField(
        max_length=128, blank=True, help_text="SHA-256 of the per-call stream token; never the token."
    )
    agent = models.JSONField(
        null=True, blank=True, help_text="What answers the call: a dotted path or a config dict (place_call)."
    )
    metadata = models.JSONField(default=dict, blank=True, help_text="The caller's own data from place_call.")
    answered_by = models.CharField(
        max_length=32, choices=AnsweredBy.choices, blank=True,
        help_text="Answering-machine detection's result (outbound calls that asked for it).",
    )

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("call")

    def __str__(self) -> str:
        return self.call_sid

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class MediaStream(models.Model):
    stream_sid = models.CharField(_("stream SID"), max_length=64, unique=True)
    call = models.ForeignKey(Call, on_delete=models.CASCADE, related_name="streams")
    started_at = models.DateTimeField(default=timezone.now)
    stopped_at = models.DateTimeField(null=True, blank=True, db_index=True)
    tracks = models.JSONField(default=list, blank=True)
    media_format = models.JSONField(default=dict, blank=True)
    custom_parameters = models.JSONField(
        default=dict, blank=True, help_text="From <Parameter>; the stream token is removed."
    )
    close_code = models.IntegerField(null=True, blank=True)
    close_reason = models.CharField(max_length=200, blank=True)
    server = models.CharField(
        max_length=200, blank=True, help_text="host:pid of the process that holds the socket."
    )
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    stats = models.JSONField(default=dict, blank=True, help_text="Frame, gap and error counters.")

    class Meta:
        ordering = ["-started_at"]
        verbose_name = _("media stream")

    def __str__(self) -> str:
        return self.stream_sid


class TranscriptSegment(models.Model):
    class Speaker(models.TextChoices):
        CALLER = "caller", _("caller")
        AGENT = "agent", _("agent")

    call = models.ForeignKey(Call, on_delete=models.CASCADE, related_name="transcript")
    stream = models.ForeignKey(
        MediaStream, on_delete=models.SET_NULL, null=True, blank=True, related_name="transcript"
    )
    speaker = models.CharField(max_length=8, choices=Speaker.choices)
    text = models.TextField()
    is_final = models.BooleanField(default=True)
    interrupted = models.BooleanField(default=False)
    start_ms = models.IntegerField(null=True, blank=True, help_text="Offset into the stream.")
    end_ms = models.IntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name = _("transcript segment")

    def __str__(self) -> str:
        return f"{self.speaker}: {self.text[:60]}"


class CallEvent(models.Model):
    call = models.ForeignKey(Call, on_delete=models.CASCADE, related_name="events")
    stream = models.ForeignKey(
        MediaStream, on_delete=models.SET_NULL, null=True, blank=True, related_name="events"
    )
    type = models.CharField(max_length=64, db_index=True)
    payload = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name = _("call event")

    def __str__(self) -> str:
        return self.type


class WebhookReceipt(models.Model):
    """A signed webhook already handled, kept for the replay window.

    The response is stored encrypted (it can hold a stream token) so a replay
    is answered exactly like the original without keeping the token in clear.
    """

    key = models.CharField(max_length=64, unique=True)
    path = models.CharField(max_length=200)
    status_code = models.PositiveSmallIntegerField(default=200)
    content_type = models.CharField(max_length=100, blank=True)
    body = models.TextField(blank=True, help_text="Encrypted response body.")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        verbose_name = _("webhook receipt")


class Recording(models.Model):
    """A recording of a live call started through the REST API, as its status callbacks report it."""

    recording_sid = models.CharField(_("recording SID"), max_length=64, unique=True)
    call = models.ForeignKey(Call, on_delete=models.CASCADE, related_name="recordings")
    status = models.CharField(max_length=16, blank=True, help_text="in-progress, paused, stopped, completed, absent...")
    url = models.URLField(max_length=500, blank=True, help_text="Twilio's RecordingUrl (append .wav or .mp3).")
    duration = models.PositiveIntegerField(null=True, blank=True, help_text="Seconds, from RecordingDuration.")
    channels = models.PositiveSmallIntegerField(null=True, blank=True)
    source = models.CharField(max_length=32, blank=True)
    error_code = models.CharField(max_length=16, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name = _("recording")

    def __str__(self) -> str:
        return self.recording_sid


class PacingSlot(models.Model):
    """The next free start time for outbound calls of one account (voicecall.pacing)."""

    key = models.CharField(max_length=64, unique=True)
    next_at = models.DateTimeField()

    class Meta:
        verbose_name = _("pacing slot")
