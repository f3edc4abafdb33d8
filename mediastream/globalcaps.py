"""``MAX_CONNECTIONS`` across every process that shares Redis.

Each process keeps one field in one Redis hash: its count of open media stream
sockets (those holding a slot: not the silent ones parked by
:mod:`mediastream.admission`), when that count expires, and the sequence number
of the write (``"<count>:<expiry ms>:<seq>"``; the expiry by Redis' own clock,
so hosts' clocks do not matter). Admitting a socket is one Lua script,
atomic in Redis: it drops the fields that have expired, sums the others, and
writes this process's new count only if the sum stays within the limit. The
count written is always this process's whole count (never an increment), and a
refresh rewrites it every ``LEASE_SECONDS / 3``, so a lost write heals at the
next one and a process killed with SIGKILL stops counting ``LEASE_SECONDS``
after its last refresh.

Redis is asked once per handshake and once per socket's end, never per frame.
When it does not answer within ``TIMEOUT`` the caps fail open to each process's
own ``MAX_CONNECTIONS`` (checked before, by :mod:`mediastream.admission`): one
warning, then no Redis call on the handshake path until a refresh answers
again, and the sockets admitted meanwhile are counted from then on. A Redis
blip therefore never refuses or ends calls.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from typing import Any

from .throttled import ThrottledLog

__all__ = ["GlobalLimits", "GlobalCaps", "caps", "limits_from_settings", "setting_errors"]

logger = logging.getLogger(__name__)

#: Seconds between attempts to reach Redis while it is down.
RETRY_SECONDS = 1.0

#: Redis lost and back, said at most twice a minute (a Redis that flaps says how often instead).
_outages = ThrottledLog(
    logger,
    "%(count)d more lines about Redis and the global connection limit in the last %(seconds).0fs (it comes and goes)",
    interval=60.0,
    burst=2,
)

# KEYS[1]: the hash. ARGV: this process's field, its count now, how many more sockets
# it asks slots for, the limit (-1: write without checking), the lease in ms.
# Returns {slots granted, total counted after}.
_SCRIPT = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local me, base, asked = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local limit, lease = tonumber(ARGV[4]), tonumber(ARGV[5])
local others = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local count, expiry = string.match(fields[i + 1], '^(%d+):(%d+)$')
  if count == nil or tonumber(expiry) <= now_ms then
    redis.call('HDEL', KEYS[1], fields[i])
  elseif fields[i] ~= me then
    others = others + tonumber(count)
  end
end
local granted = asked
if limit >= 0 then
  granted = math.max(0, math.min(asked, limit - others - base))
end
redis.call('HSET', KEYS[1], me, (base + granted) .. ':' .. (now_ms + lease))
redis.call('PEXPIRE', KEYS[1], lease * 2)
return {granted, others + base + granted}
"""


@dataclass(frozen=True)
class GlobalLimits:
    """Where the shared count lives and its limit (None from :func:`limits_from_settings`: caps are per process)."""

    redis_url: str
    key: str
    max_connections: int
    lease_seconds: float = 15.0
    timeout: float = 1.0


def _layer_redis(layers: Mapping[str, Any]) -> tuple[str, str] | None:
    """(Redis URL, prefix) of the default channel layer when it is channels_redis', else None."""
    default = layers.get("default") or {}
    if "channels_redis" not in str(default.get("BACKEND", "")):
        return None
    config = default.get("CONFIG") or {}
    hosts = config.get("hosts") or ["redis://localhost:6379"]
    host = hosts[0]
    if isinstance(host, dict):
        address = host.get("address")
    elif isinstance(host, (list, tuple)) and len(host) == 2:
        address = f"redis://{host[0]}:{host[1]}"
    else:
        address = host
    if not isinstance(address, str):
        return None
    return address, str(config.get("prefix", "asgi"))


def limits_from_settings(values: Mapping[str, Any], layers: Mapping[str, Any]) -> GlobalLimits | None:
    """The global limits ``MEDIASTREAM`` asks for, or None (per-process caps only, as with the in-memory layer)."""
    options = values.get("GLOBAL_LIMITS") or {}
    enabled = options.get("ENABLED")
    layer = _layer_redis(layers)
    if enabled is False or (enabled is None and layer is None):
        return None
    url = options.get("REDIS_URL") or (layer[0] if layer else None)
    if not url:
        return None  # ENABLED without a Redis to use: setting_errors() says so
    prefix = layer[1] if layer else "asgi"
    return GlobalLimits(
        redis_url=url,
        key=options.get("KEY") or f"{prefix}:mediastream:connections",
        max_connections=int(options.get("MAX_CONNECTIONS") or values["MAX_CONNECTIONS"]),
        lease_seconds=float(options.get("LEASE_SECONDS", 15.0)),
        timeout=float(options.get("TIMEOUT", 1.0)),
    )


def setting_errors(values: Mapping[str, Any], layers: Mapping[str, Any]) -> list[str]:
    """What is wrong with ``GLOBAL_LIMITS`` (for the system check), one sentence each."""
    options = values.get("GLOBAL_LIMITS")
    if not isinstance(options, dict):
        return [f"MEDIASTREAM['GLOBAL_LIMITS'] must be a dict, got {options!r}."]
    errors = []
    if options.get("ENABLED") not in (None, True, False):
        errors.append(f"MEDIASTREAM['GLOBAL_LIMITS']['ENABLED'] must be None, True or False, got {options['ENABLED']!r}.")
    if options.get("ENABLED") is True and not options.get("REDIS_URL") and _layer_redis(layers) is None:
        errors.append(
            "MEDIASTREAM['GLOBAL_LIMITS']['ENABLED'] is True but there is no Redis: set its REDIS_URL "
            "or use channels_redis as the default channel layer."
        )
    for name in ("MAX_CONNECTIONS", "LEASE_SECONDS", "TIMEOUT"):
        value = options.get(name)
        if name == "MAX_CONNECTIONS" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            errors.append(f"MEDIASTREAM['GLOBAL_LIMITS']['{name}'] must be a positive number, got {value!r}.")
    return errors


class GlobalCaps:
    """This process's share of the global count: the sockets it holds, written to Redis whole.

    One writer task per process makes every write, one at a time, so they
    never overtake each other: handshakes that arrive while a write is under
    way wait for the next one and ask for their slots together (a burst costs
    a few round trips, not one each); an end, or a socket parked or
    promoted, is in the next write; and a write every ``LEASE_SECONDS / 3``
    keeps the count from expiring.
    """

    def __init__(self, limits: GlobalLimits, server_id: str, parked: Callable[[], Container[str]] = frozenset) -> None:
        self.limits = limits
        #: The field of this process: its server id and an instance of its own (a pid can come back).
        self.field = f"{server_id}:{uuid.uuid4().hex[:8]}"
        self.held: set[str] = set()
        #: Sockets of ``held`` that hold no slot now (parked by mediastream.admission): not counted.
        self._parked = parked
        self.down_since: float | None = None
        self.admitted_while_down = 0
        self.total_seen: int | None = None  # the deployment's count at the last write
        self._asking: list[tuple[str, asyncio.Future]] = []
        self._wake: asyncio.Event | None = None
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: asyncio.Task | None = None

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def count(self) -> int:
        parked = self._parked()
        return sum(1 for conn_id in self.held if conn_id not in parked) if parked else len(self.held)

    async def acquire(self, conn_id: str) -> bool:
        """Count ``conn_id`` if the global limit allows it; True also while Redis is down (fail open)."""
        self._bind()
        if self.down or self._writer.done():  # the writer only ends with its event loop
            self.held.add(conn_id)
            self.admitted_while_down += 1
            return True
        answer = self._loop.create_future()
        self._asking.append((conn_id, answer))
        self._wake.set()
        return await answer

    def release(self, conn_id: str) -> None:
        """``conn_id`` is gone (written with the next write); safe to call for a socket never counted."""
        if conn_id in self.held:
            self.held.discard(conn_id)
            if self._wake is not None:
                self._wake.set()

    async def total(self) -> int:
        """Sockets counted across all live processes, after a write of this process's count."""
        self._bind()
        answer = self._loop.create_future()
        self._asking.append(("", answer))  # asks for no slot: the empty id is never held
        self._wake.set()
        await answer
        return self.total_seen

    def _bind(self) -> None:
        """A client and writer of this event loop (a test's earlier loop left its own behind)."""
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        import redis.asyncio as aioredis

        self._loop = loop
        timeout = self.limits.timeout
        self._client = aioredis.Redis.from_url(
            self.limits.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False
        )
        self._script = self._client.register_script(_SCRIPT)
        self.down_since = None
        self._asking = []
        self._wake = asyncio.Event()
        self._writer = loop.create_task(self._write_forever(), name="mediastream-globalcaps")

    async def _write_forever(self) -> None:
        while True:
            pause = RETRY_SECONDS if self.down else self.limits.lease_seconds / 3
            try:
                await asyncio.wait_for(self._wake.wait(), pause)
            except TimeoutError:
                pass
            self._wake.clear()
            asking, self._asking = self._asking, []
            wanted = [(conn_id, answer) for conn_id, answer in asking if conn_id and not answer.done()]
            limit = -1 if self.down else self.limits.max_connections  # fail open until the write answers
            try:
                granted, self.total_seen = await self._write(len(wanted), limit)
            except Exception as exc:
                self._lost(exc)
                granted = len(wanted)
                self.admitted_while_down += granted
            else:
                self._back()
            for n, (conn_id, answer) in enumerate(wanted):
                if n < granted and not answer.done():  # not given up (a cancelled handshake is not counted)
                    self.held.add(conn_id)
                    answer.set_result(True)
                elif not answer.done():
                    answer.set_result(False)
            for conn_id, answer in asking:
                if not conn_id and not answer.done():
                    answer.set_result(None)

    async def _write(self, asked: int, limit: int) -> tuple[int, int]:
        args = (self.field, self.count(), asked, limit, int(self.limits.lease_seconds * 1000))
        result = await asyncio.wait_for(self._script(keys=[self.limits.key], args=args), self.limits.timeout)
        return int(result[0]), int(result[1])

    def _lost(self, exc: BaseException) -> None:
        if self.down:
            return
        self.down_since = asyncio.get_running_loop().time()
        self.admitted_while_down = 0
        _outages.warning(
            "Redis unavailable for the global connection limit (%s: %s); each process admits up to its own "
            "MAX_CONNECTIONS until it answers",
            type(exc).__name__,
            " ".join(str(exc).split())[:160] or f"no answer within {self.limits.timeout:g}s",
        )

    def _back(self) -> None:
        if self.down:
            _outages.warning(
                "Redis back for the global connection limit after %.1fs (%d sockets admitted meanwhile, now counted)",
                asyncio.get_running_loop().time() - self.down_since,
                self.admitted_while_down,
            )
            self.down_since = None


class _Caps:
    """The process's :class:`GlobalCaps` for the current settings (None: per-process caps only)."""

    def __init__(self) -> None:
        self._built: tuple[Any, GlobalCaps | None] | None = None

    def get(self) -> GlobalCaps | None:
        from django.conf import settings

        from .admission import registry
        from .conf import app_settings
        from .db import SERVER_ID

        values = app_settings.as_dict()
        marker = (id(values), id(getattr(settings, "CHANNEL_LAYERS", None)))
        if self._built is None or self._built[0] != marker:
            limits = limits_from_settings(values, getattr(settings, "CHANNEL_LAYERS", {}) or {})
            self._built = (marker, GlobalCaps(limits, SERVER_ID, lambda: registry.parked) if limits else None)
        return self._built[1]


#: This process's global caps (one event loop, one set of sockets).
caps = _Caps()
