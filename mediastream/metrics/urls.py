"""``path("", include("mediastream.metrics.urls"))`` serves the Prometheus endpoint at ``/metrics``."""

from django.urls import path

from .views import metrics_view

urlpatterns = [path("metrics", metrics_view, name="mediastream-metrics")]
