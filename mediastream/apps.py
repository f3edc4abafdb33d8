from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class MediaStreamConfig(AppConfig):
    name = "mediastream"
    verbose_name = _("Media streams")

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers system checks)
