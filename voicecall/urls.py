"""Twilio webhook routes (mounted under ``twilio/`` by the project).

Each path also matches without its trailing slash: Twilio posts to exactly
the URL configured in its console, and a CommonMiddleware APPEND_SLASH
redirect would turn the POST into a GET and lose the signed body.
"""

from django.urls import re_path

from . import views

app_name = "voicecall"

__all__ = ["app_name", "urlpatterns"]

urlpatterns = [
    re_path(r"^voice/?$", views.voice, name="voice"),
    re_path(r"^status/?$", views.call_status, name="status"),
    re_path(r"^stream-status/?$", views.stream_status, name="stream-status"),
    re_path(r"^amd-status/?$", views.amd_status, name="amd-status"),
    re_path(r"^recording-status/?$", views.recording_status, name="recording-status"),
]
