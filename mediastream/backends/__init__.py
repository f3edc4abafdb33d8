"""Loading pluggable backends by dotted path, the way Django loads cache and email backends."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

__all__ = ["InvalidBackendError", "load_backend"]


class InvalidBackendError(ImproperlyConfigured):
    """A ``MEDIASTREAM[...]["BACKEND"]`` that cannot be imported or built."""


def load_backend(setting_name: str, config: dict[str, Any]) -> Any:
    """Build ``config["BACKEND"](**config["OPTIONS"])``; errors name the setting."""
    if not isinstance(config, dict) or "BACKEND" not in config:
        raise InvalidBackendError(
            f'MEDIASTREAM["{setting_name}"] must be a dict with a "BACKEND" dotted path.'
        )
    path = config["BACKEND"]
    options = config.get("OPTIONS") or {}
    try:
        backend_cls = import_string(path)
    except ImportError as exc:
        raise InvalidBackendError(
            f'Could not import {path!r} named in MEDIASTREAM["{setting_name}"]["BACKEND"]: {exc}'
        ) from exc
    try:
        return backend_cls(**options)
    except TypeError as exc:
        raise InvalidBackendError(
            f'Bad OPTIONS for {path!r} in MEDIASTREAM["{setting_name}"]: {exc}'
        ) from exc
