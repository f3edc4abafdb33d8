"""System checks for ``MEDIASTREAM["TALK"]`` (registered by ``mediastream.apps``)."""

from __future__ import annotations

from django.core.checks import Error, Warning, register
from django.core.exceptions import ImproperlyConfigured

from .limits import talk_settings

__all__ = ["check_talk_settings"]


@register()
def check_talk_settings(app_configs=None, **kwargs) -> list:
    try:
        limits = talk_settings()
    except ImproperlyConfigured as exc:
        return [
            Error(
                str(exc),
                hint='Leave the key out for its default (see mediastream/conf.py DEFAULTS["TALK"]).',
                id="mediastream.E030",
            )
        ]
    if limits.max_sessions_per_connection > limits.max_sessions:
        return [
            Warning(
                'MEDIASTREAM["TALK"]["MAX_SESSIONS_PER_CONNECTION"] is above MAX_SESSIONS, '
                "so MAX_SESSIONS is the limit.",
                hint="Lower MAX_SESSIONS_PER_CONNECTION or raise MAX_SESSIONS.",
                id="mediastream.W030",
            )
        ]
    return []
