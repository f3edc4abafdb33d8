"""Signal receivers: the whole bot.

Receivers run in order on the stream's event task, so they queue speech with
``wait=False`` and return at once. Caller speech cuts the bot off by itself
(barge-in is built into the consumer).
"""

from django.dispatch import receiver

from mediastream.api import aspeak
from mediastream.consumers import MediaStreamConsumer
from mediastream.signals import dtmf_received, stream_started, transcript_final

MENU = {"1": "Our opening hours are nine to five.", "2": "Please hold, connecting you to a person."}


@receiver(stream_started, sender=MediaStreamConsumer, dispatch_uid="echobot.greet")
async def greet(sender, call_sid: str, **kwargs) -> None:
    await aspeak(call_sid, "Hello! Say something and I will repeat it. Press 1 for hours.")


@receiver(transcript_final, sender=MediaStreamConsumer, dispatch_uid="echobot.echo")
async def echo(sender, call_sid: str, text: str, **kwargs) -> None:
    await aspeak(call_sid, f"You said: {text}")


@receiver(dtmf_received, sender=MediaStreamConsumer, dispatch_uid="echobot.menu")
async def menu(sender, call_sid: str, digit: str, **kwargs) -> None:
    await aspeak(call_sid, MENU.get(digit, f"You pressed {digit}."))
