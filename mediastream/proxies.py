"""``TRUSTED_PROXIES`` entries: an IP or a CIDR network each (no Django here).

``mediastream.admission`` trusts the networks; ``manage.py check`` names each
entry that is neither (``mediastream.E010``), which admission skips: trusting
less is the safe side, but a typo such as ``10.0.0.0/33`` must not go unseen.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["parse_trusted_proxy", "invalid_trusted_proxies"]


def parse_trusted_proxy(entry: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """One entry as a network (an IP is a network of one); ValueError saying why if it is neither."""
    if not isinstance(entry, str):
        raise ValueError(f"{entry!r} is not a string")
    try:
        return ipaddress.ip_network(entry.strip().strip("[]"), strict=False)
    except ValueError as exc:
        raise ValueError(str(exc)) from None


def invalid_trusted_proxies(entries: Iterable[object]) -> list[tuple[object, str]]:
    """The entries that are not an IP or a network, each with why."""
    invalid = []
    for entry in entries:
        try:
            parse_trusted_proxy(entry)
        except ValueError as exc:
            invalid.append((entry, str(exc)))
    return invalid
