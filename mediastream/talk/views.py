"""The talk page in the admin: staff only, like the relay's WebSocket it opens."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from ..agents.base import BaseSpeechAgent
from . import RELAY_PATH
from .protocol import RelayError
from .voice import relay_agent

__all__ = ["talk_page"]


@staff_member_required
def talk_page(request: HttpRequest) -> HttpResponse:
    try:
        agent = relay_agent()
        agent_name = type(agent).__name__
        speaks = isinstance(agent, BaseSpeechAgent)
        voice_kind = "speech to speech" if speaks else "speech-to-text, the agent, text-to-speech"
    except RelayError as exc:
        agent_name, voice_kind = "no agent", exc.message
    context = {
        **admin.site.each_context(request),
        "title": "Talk to the agent",
        "relay_path": RELAY_PATH,
        "agent_name": agent_name,
        "voice_kind": voice_kind,
    }
    return TemplateResponse(request, "mediastream/talk/page.html", context)
