"""The extension point of a call's admin page: controls other apps add to ``CallAdmin``.

``CallAdmin`` is registered once, by voicecall, and never replaced. An app that
can act on a call (mediastream: say a line, interrupt; later a hang-up or
transfer through Twilio's REST API, or a live console) subclasses
:class:`CallControl`, overrides the hooks it needs and calls :func:`register`.
``CallAdmin`` asks every registered control, at request time, for:

* extra admin URLs (``get_urls``), tried before its own;
* changelist actions (``get_actions``), permission-filtered like any other;
* links in the change form's object tools (``object_tools``);
* panels, templates included on the change form (``panels``).

Why a registry rather than a ``CallAdmin`` subclass that unregisters and
re-registers the model: voicecall imports nothing from the apps that extend
it, so the dependency points one way; several apps can contribute without
knowing of each other or of their order in ``INSTALLED_APPS``; and
customisations of ``CallAdmin`` are never silently dropped by a later
re-registration. Register during start-up, from the app's ``admin`` module
(imported by admin autodiscovery, so only when the admin is installed) or its
``AppConfig.ready``: URLs are collected once, when the URLconf first loads;
the other hooks run on every request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin
    from django.http import HttpRequest
    from django.urls import URLPattern

    from .models import Call

__all__ = ["ObjectTool", "Panel", "CallControl", "register", "unregister", "registered_controls"]


@dataclass(frozen=True)
class ObjectTool:
    """A link at the top of the call's change form, next to "History"."""

    label: str
    url: str


@dataclass(frozen=True)
class Panel:
    """A template included on the call's change form, below the fields.

    The template sees the change form's context plus ``panel``, this
    panel's ``context``. It renders inside the change form's ``<form>``, so it
    holds links, read-outs or scripts, not forms of its own.
    """

    template: str
    context: Mapping[str, Any] = field(default_factory=dict)


class CallControl:
    """Base class of a control on the call admin; every hook contributes nothing by default.

    ``name`` identifies the control in the registry (e.g. ``"mediastream.speech"``).
    Name extra URLs ``"voicecall_call_<what>"`` so they reverse as
    ``admin:voicecall_call_<what>`` like the admin's own.
    """

    name: str = ""

    def get_urls(self, model_admin: ModelAdmin) -> list[URLPattern]:
        """URL patterns under the call admin (wrap views in ``model_admin.admin_site.admin_view``)."""
        return []

    def get_actions(self, model_admin: ModelAdmin) -> list[Callable]:
        """Changelist actions: ``function(model_admin, request, queryset)``, decorated with ``@admin.action``."""
        return []

    def object_tools(self, model_admin: ModelAdmin, request: HttpRequest, call: Call) -> list[ObjectTool]:
        """Links for this call's change form (e.g. only while the call is live)."""
        return []

    def panels(self, model_admin: ModelAdmin, request: HttpRequest, call: Call) -> list[Panel]:
        """Templates to include on this call's change form."""
        return []


_controls: dict[str, CallControl] = {}


def register(control: CallControl) -> CallControl:
    """Add ``control`` to every call admin page; a control of the same name is replaced."""
    if not control.name:
        raise ValueError(f"{type(control).__name__} needs a name")
    _controls[control.name] = control
    return control


def unregister(name: str) -> None:
    """Remove the control registered as ``name`` (nothing if there is none)."""
    _controls.pop(name, None)


def registered_controls() -> tuple[CallControl, ...]:
    """The registered controls, in registration order."""
    return tuple(_controls.values())
