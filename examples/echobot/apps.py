from django.apps import AppConfig


class EchoBotConfig(AppConfig):
    name = "examples.echobot"
    label = "echobot"
    verbose_name = "Echo bot (example)"

    def ready(self) -> None:
        from . import handlers  # noqa: F401  (connects the signal receivers)
