"""Where a live call's stream listens: the consumer's channel name, for any process.

``mediastream.api`` sends commands straight to that channel with
``channel_layer.send()`` (one message, and ``ChannelFull`` when the consumer's
channel is full, where a group send drops it silently). Two places hold it:

* this process's own streams, in memory: a command from the process holding the
  call (an agent, a receiver, the console) costs no I/O. With the in-memory
  channel layer, which is one process anyway, that is the whole directory.
* with channels_redis' ``RedisChannelLayer``, a key per call in the layer's own
  Redis, ``<prefix>:mediastream:stream:<CallSid>``, holding the channel name. It
  expires after ``STALE_STREAM_SECONDS`` and the stream sets it again every
  ``STREAM_HEARTBEAT_SECONDS``, so a process that dies without its teardown
  leaves nothing behind for longer than the reaper would.

Redis rather than a column on the stream row: commands already depend on the
layer's Redis, not on the database, and calls must go on taking commands while
the database is away; the lookup is one GET (no thread hop, no query) and a
dead process's key expires by itself. ``mediastream.layer`` writes the key
again when Redis comes back empty.
"""

from __future__ import annotations

import weakref

from channels.layers import BaseChannelLayer

__all__ = ["Directory", "for_layer"]

#: Deletes the key only while it still names this stream's channel (a newer
#: stream of the same call may have replaced it).
_DELETE_IF_OURS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Directory:
    """The channels of one layer's live streams, by CallSid."""

    def __init__(self, layer: BaseChannelLayer) -> None:
        self.layer = layer
        self.local: dict[str, str] = {}  # this process's streams
        self.shared = _is_redis_core(layer)

    def key(self, call_sid: str) -> str:
        return f"{self.layer.prefix}:mediastream:stream:{call_sid}"

    async def register(self, call_sid: str, channel: str, ttl: float) -> None:
        """Say where ``call_sid``'s stream listens (again: a refresh or after an outage)."""
        self.local[call_sid] = channel
        if self.shared:
            key = self.key(call_sid)
            await self._redis(key).set(key, channel, ex=max(1, round(ttl)))

    async def unregister(self, call_sid: str, channel: str) -> None:
        """Forget the stream, unless a newer stream of the call has taken its place."""
        if self.local.get(call_sid) == channel:
            del self.local[call_sid]
        if self.shared:
            key = self.key(call_sid)
            await self._redis(key).eval(_DELETE_IF_OURS, 1, key, channel)

    async def lookup(self, call_sid: str) -> str | None:
        """The channel of ``call_sid``'s live stream, or None when no process holds one."""
        channel = self.local.get(call_sid)
        if channel is not None or not self.shared:
            return channel
        key = self.key(call_sid)
        value = await self._redis(key).get(key)
        return value.decode() if isinstance(value, bytes) else value

    def _redis(self, key: str):
        return self.layer.connection(self.layer.consistent_hash(key))


def _is_redis_core(layer: BaseChannelLayer) -> bool:
    try:
        from channels_redis.core import RedisChannelLayer
    except ImportError:
        return False
    return isinstance(layer, RedisChannelLayer)


_directories: weakref.WeakKeyDictionary[BaseChannelLayer, Directory] = weakref.WeakKeyDictionary()


def for_layer(layer: BaseChannelLayer) -> Directory:
    """The directory of ``layer`` (one per layer object, like its channels)."""
    directory = _directories.get(layer)
    if directory is None:
        directory = _directories[layer] = Directory(layer)
    return directory
