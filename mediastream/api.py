"""Make a live call speak, or stop it mid-sentence, from any Django code in any process.

Every function sends through the channel layer straight to the channel of the
consumer that holds the call's stream (found in ``mediastream.directory``), so
views, admin actions, tasks and other processes all use the same path::

    from mediastream.api import speak, interrupt

    speak(call_sid, "Your table is booked.")               # queue it and return
    result = speak(call_sid, "Anything else?", wait=True)  # wait for the outcome
    if result.outcome == Outcome.PLAYED: ...
    interrupt(call_sid, "operator")                        # barge-in

With the in-memory channel layer only code in the same process reaches a call;
production uses Redis. A call with no live stream gets ``NO_STREAM`` (or
``None`` from ``interrupt(wait=True)``) at once; a stream whose process died
answers nothing, so that takes ``ACK_TIMEOUT`` until its entry expires. A
consumer whose channel is full raises ``channels.exceptions.ChannelFull``.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from .audio import to_mulaw
from .directory import for_layer
from .messages import Interrupt, Interrupted, Result, Say
from .playback.player import Outcome, PlaybackItem, PlaybackResult

__all__ = [
    "Outcome",
    "PlaybackResult",
    "aspeak",
    "speak",
    "aplay_audio",
    "play_audio",
    "ainterrupt",
    "interrupt",
    "ACK_TIMEOUT",
]

#: How long a waiting caller gives the consumer to acknowledge a command
#: before concluding that no live stream holds the call.
ACK_TIMEOUT = 2.0


async def aspeak(
    call_sid: str,
    text: str,
    *,
    wait: bool = False,
    timeout: float = 60.0,
    interruptible: bool = True,
) -> PlaybackResult | str:
    """Say ``text`` on the call. Returns the item id, or with ``wait=True`` the outcome."""
    if not text or not text.strip():
        raise ValueError("speak() needs some text")
    return await _say(call_sid, text=text, interruptible=interruptible, wait=wait, timeout=timeout)


async def aplay_audio(
    call_sid: str,
    audio: bytes | str | os.PathLike | BinaryIO,
    *,
    wait: bool = False,
    timeout: float = 60.0,
    interruptible: bool = True,
) -> PlaybackResult | str:
    """Play audio on the call: raw 8 kHz mu-law bytes, or a WAV (bytes, path or file) in any common format.

    The conversion to 8 kHz mu-law happens here, in the caller's process.
    """
    if isinstance(audio, (str, os.PathLike)):
        audio = Path(audio).read_bytes()
    elif hasattr(audio, "read"):
        audio = audio.read()
    mulaw = await asyncio.to_thread(to_mulaw, audio) if len(audio) > 64_000 else to_mulaw(audio)
    if not mulaw:
        raise ValueError("play_audio() got no audio")
    return await _say(call_sid, audio=mulaw, interruptible=interruptible, wait=wait, timeout=timeout)


async def ainterrupt(call_sid: str, reason: str = "interrupted", *, wait: bool = False) -> int | None:
    """Barge-in: stop what the call is saying and drop what is queued.

    With ``wait=True`` returns how many items were cut off, or ``None`` when no
    live stream answered.
    """
    layer = _layer()
    channel = await for_layer(layer).lookup(call_sid)
    if channel is None:
        return None
    if not wait:
        await layer.send(channel, Interrupt(reason).to_message())
        return None
    reply_to = await _reply_channel(layer)
    await layer.send(channel, Interrupt(reason, reply_to=reply_to).to_message())
    try:
        reply = await asyncio.wait_for(layer.receive(reply_to), ACK_TIMEOUT)
    except TimeoutError:
        return None
    if reply.get("type") != Interrupted.type or not reply.get("live"):
        return None
    return reply["count"]


speak = async_to_sync(aspeak)
play_audio = async_to_sync(aplay_audio)
interrupt = async_to_sync(ainterrupt)
speak.__doc__ = aspeak.__doc__
play_audio.__doc__ = aplay_audio.__doc__
interrupt.__doc__ = ainterrupt.__doc__


async def _reply_channel(layer) -> str:
    """A channel for the consumer's replies, named like the process's consumers' own.

    channels_redis keeps all of a process's channels of one name prefix in one
    Redis list, and lets one receive at a time block on its list: a reply
    channel of a prefix of its own would wait out a consumer's blocking read of
    the other list (5 s) in any process that also runs consumers, and a
    waiting ``speak()`` would miss its acknowledgement.
    """
    return await layer.new_channel()


def _layer():
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("mediastream.api needs a channel layer: set CHANNEL_LAYERS in settings")
    return layer


async def _say(
    call_sid: str, *, text: str = "", audio: bytes | None = None, interruptible: bool, wait: bool, timeout: float
) -> PlaybackResult | str:
    layer = _layer()
    item_id = PlaybackItem().id + "-" + os.urandom(3).hex()
    command = Say(item_id=item_id, text=text, audio=audio, interruptible=interruptible)
    channel = await for_layer(layer).lookup(call_sid)
    if channel is None:
        if wait:
            return PlaybackResult(item_id, Outcome.NO_STREAM, text=text, error="no live stream for the call")
        return item_id
    if not wait:
        await layer.send(channel, command.to_message())
        return item_id
    reply_to = await _reply_channel(layer)
    await layer.send(channel, replace(command, reply_to=reply_to).to_message())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        reply = await asyncio.wait_for(layer.receive(reply_to), min(ACK_TIMEOUT, timeout))
    except TimeoutError:
        return PlaybackResult(item_id, Outcome.NO_STREAM, text=text, error="no live stream for the call")
    while reply.get("type") != Result.type:
        remaining = deadline - loop.time()
        try:
            reply = await asyncio.wait_for(layer.receive(reply_to), max(remaining, 0.001))
        except TimeoutError:
            return PlaybackResult(item_id, Outcome.UNCONFIRMED, text=text, error=f"no outcome within {timeout:g}s")
    return Result.parse(reply)
