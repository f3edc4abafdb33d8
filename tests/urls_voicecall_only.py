"""The URLs of a project that has voicecall without mediastream: the admin and the webhooks."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("twilio/", include("voicecall.urls")),
]
