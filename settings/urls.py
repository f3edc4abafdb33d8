from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/talk/", include("mediastream.talk.urls")),
    path("admin/", admin.site.urls),
    path("twilio/", include("voicecall.urls")),
    path("", include("mediastream.metrics.urls")),
    path("healthz", include("mediastream.health")),
]
