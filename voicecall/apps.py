from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class VoiceCallConfig(AppConfig):
    name = "voicecall"
    verbose_name = _("Voice calls")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, control_checks  # noqa: F401  (register system checks)
