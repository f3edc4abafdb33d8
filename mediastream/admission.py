"""Connection guards: caps on open and pending sockets, and the client IP they count by.

No Django or socket types here, so the limits are unit-testable. The registry
is per process on purpose: it protects this process's event loop and memory,
which is what the limits are for. Each daphne process enforces its own caps;
``MAX_CONNECTIONS`` is also held across processes sharing Redis by
:mod:`mediastream.globalcaps`, asked after these (and, when Redis is away,
these caps are the ones that hold).
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache

from .metrics import STREAMS_PENDING
from .proxies import parse_trusted_proxy

__all__ = ["Admission", "AdmissionRegistry", "registry", "resolve_client_ip"]

logger = logging.getLogger(__name__)


class Admission(Enum):
    OK = "ok"
    TOO_MANY_CONNECTIONS = "too many connections"
    TOO_MANY_PENDING = "too many pending"


@dataclass
class _Pending:
    ip: str
    #: Called when the socket must close to make room (it closes itself).
    evict: Callable[[], None] | None = None


@dataclass
class AdmissionRegistry:
    """Counts open sockets and sockets that have not sent an accepted ``start``.

    Anyone who saw one signed upgrade can open sockets that never start (the
    signature covers only the URL). When the pending slots are full, a new
    socket takes the slot of the oldest silent one of the address holding the
    most pending sockets, as long as that address holds more than the
    newcomer's. The displaced socket is *parked*, not closed: it keeps its
    start window (a real stream that was slow to start still gets in) but
    holds no slot and does not count against ``MAX_CONNECTIONS``. Closing it
    would only make a flood reconnect at once, and a flood's cost is its
    churn; a parked socket costs a little memory, bounded by the parking cap
    (the oldest parked socket is closed beyond it). A socket that sent
    ``start`` leaves the pending count and is never displaced.
    """

    open: set[str] = field(default_factory=set)
    pending: dict[str, _Pending] = field(default_factory=dict)  # connection id -> entry, oldest first
    pending_per_ip: Counter[str] = field(default_factory=Counter)
    parked: dict[str, _Pending] = field(default_factory=dict)  # displaced silent sockets, oldest first
    evictions: int = 0  # parked sockets closed to make room
    #: Told the pending count whenever it changes (the process registry's: the mediastream_streams_pending gauge).
    on_pending: Callable[[int], None] | None = None

    def open_connection(self, conn_id: str, max_connections: int) -> Admission:
        """Reserve a slot for a new socket at the handshake (before accept).

        Silent sockets hold at most the pending slots (they are evicted beyond
        that), so the rest of this cap is left to streams that started.
        """
        if len(self.open) - len(self.parked) >= max_connections:
            return Admission.TOO_MANY_CONNECTIONS
        self.open.add(conn_id)
        return Admission.OK

    def add_pending(
        self,
        conn_id: str,
        client_ip: str,
        max_pending: int,
        max_per_ip: int,
        evict: Callable[[], None] | None = None,
        max_parked: int = 0,
    ) -> Admission:
        """Mark an accepted socket as waiting for ``start``; ``evict`` closes it if it must make room."""
        if self.pending_per_ip[client_ip] >= max_per_ip:
            return Admission.TOO_MANY_PENDING
        if len(self.pending) >= max_pending:
            victim = self._victim(client_ip)
            if victim is None:
                return Admission.TOO_MANY_PENDING
            self._park(victim, max_parked)
        self.pending[conn_id] = _Pending(client_ip, evict)
        self.pending_per_ip[client_ip] += 1
        if self.on_pending is not None:
            self.on_pending(len(self.pending))
        return Admission.OK

    def starting(self, conn_id: str) -> None:
        """The socket sent ``start``: it is no longer silent, so it holds no pending slot and is never displaced.

        Its admission is under way (``MAX_CONNECTIONS`` still counts it): a
        ramp of real streams from one address (a Twilio media server) must not
        be refused by the per-address cap while the database answers.
        """
        self.promote(conn_id)

    def promote(self, conn_id: str) -> None:
        """The socket sent an accepted ``start``: it no longer counts as pending."""
        self.parked.pop(conn_id, None)
        entry = self.pending.pop(conn_id, None)
        if entry is not None:
            self.pending_per_ip[entry.ip] -= 1
            if self.on_pending is not None:
                self.on_pending(len(self.pending))
            if self.pending_per_ip[entry.ip] <= 0:
                del self.pending_per_ip[entry.ip]

    def release(self, conn_id: str) -> None:
        """Forget the socket entirely; safe to call more than once."""
        self.promote(conn_id)
        self.open.discard(conn_id)

    @property
    def open_count(self) -> int:
        return len(self.open)

    @property
    def pending_count(self) -> int:
        return len(self.pending)

    def _victim(self, newcomer_ip: str) -> str | None:
        """The oldest silent socket of the address with the most pending, if it holds more than the newcomer's."""
        victim, most = None, self.pending_per_ip[newcomer_ip]
        for conn_id, entry in self.pending.items():
            count = self.pending_per_ip[entry.ip]
            if entry.evict is not None and count > most:
                victim, most = conn_id, count
        return victim

    def _park(self, conn_id: str, max_parked: int) -> None:
        entry = self.pending[conn_id]
        self.promote(conn_id)  # gives up its slot
        self.parked[conn_id] = entry
        while len(self.parked) > max_parked:
            oldest, parked = next(iter(self.parked.items()))
            self.release(oldest)
            self.evictions += 1
            parked.evict()


#: This process's registry (one event loop, one set of sockets).
registry = AdmissionRegistry(on_pending=STREAMS_PENDING.set)


def _normalise(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    address = address.strip().strip("[]")
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@lru_cache(maxsize=32)
def _networks(trusted: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for entry in trusted:
        try:
            networks.append(parse_trusted_proxy(entry))
        except ValueError as exc:
            # Trusting less is the safe side: the entry is skipped, said once per setting value.
            logger.warning("TRUSTED_PROXIES entry %r is not an IP or network (%s): not trusted", entry, exc)
    return tuple(networks)


def _is_trusted(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, trusted: tuple[str, ...]) -> bool:
    return any(ip.version == net.version and ip in net for net in _networks(trusted))


def resolve_client_ip(peer: str | None, forwarded_for: str | None, trusted_proxies: Iterable[str]) -> str:
    """The address limits count by.

    The socket peer, unless the peer is a trusted proxy: then ``X-Forwarded-For``
    is walked right to left to the first hop that is not a trusted proxy.
    Headers from untrusted peers are ignored, so they cannot be spoofed.
    """
    trusted = tuple(trusted_proxies)
    peer_ip = _normalise(peer or "")
    if peer_ip is None:
        return "unknown"
    if not forwarded_for or not trusted or not _is_trusted(peer_ip, trusted):
        return str(peer_ip)
    client = peer_ip
    for hop in reversed(forwarded_for.split(",")):
        hop_ip = _normalise(hop)
        if hop_ip is None:
            break  # garbage in the chain: stop at the last hop we could read
        client = hop_ip
        if not _is_trusted(hop_ip, trusted):
            break
    return str(client)
