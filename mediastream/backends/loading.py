"""Building a backend from its ``MEDIASTREAM`` setting, with errors that name the setting."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

__all__ = ["InvalidBackendError", "load_backend"]


class InvalidBackendError(ImproperlyConfigured):
    """A ``MEDIASTREAM[...]["BACKEND"]`` that cannot be imported or built."""


def load_backend(setting_name: str, config: Any, base: type | None = None) -> Any:
    """Build ``config["BACKEND"](**config["OPTIONS"])``, an instance of ``base`` when given."""
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
    if base is not None and not (isinstance(backend_cls, type) and issubclass(backend_cls, base)):
        raise InvalidBackendError(
            f'{path!r} named in MEDIASTREAM["{setting_name}"]["BACKEND"] is not a subclass of '
            f"{base.__module__}.{base.__qualname__}"
        )
    try:
        return backend_cls(**options)
    except (TypeError, ValueError) as exc:  # unknown or invalid options
        raise InvalidBackendError(
            f'Bad OPTIONS for {path!r} in MEDIASTREAM["{setting_name}"]: {exc}'
        ) from exc
