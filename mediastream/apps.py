from django.apps import AppConfig
from django.conf import settings
from django.utils.translation import gettext_lazy as _

#: The channel layer a project without ``CHANNEL_LAYERS`` gets: one process only
#: (``mediastream.preflight`` warns when a server starts on it; ``check --deploy`` too).
DEFAULT_CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


def default_channel_layers() -> bool:
    """Give a project without ``CHANNEL_LAYERS`` the in-memory layer; True if it had none.

    ``mediastream.api`` sends to the stream's channel through the layer, so a
    layer is needed even in one process; Channels has no default of its own.
    """
    if hasattr(settings, "CHANNEL_LAYERS"):
        return False
    settings.CHANNEL_LAYERS = DEFAULT_CHANNEL_LAYERS
    return True


class MediaStreamConfig(AppConfig):
    name = "mediastream"
    verbose_name = _("Media streams")

    def ready(self) -> None:
        from . import checks, receivers  # noqa: F401  (registers system checks and signal receivers)
        from .talk import checks as talk_checks  # noqa: F401  (the talk relay's settings checks)

        default_channel_layers()
        from .metrics.exposition import install

        install()  # multiprocess metrics: this process's live gauges go when it exits
