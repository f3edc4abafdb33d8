"""What every pluggable backend has, whatever its kind: options, a warm-up, and closing."""

from __future__ import annotations

from typing import Any

__all__ = ["Backend"]


class Backend:
    """Built as ``BACKEND(**OPTIONS)`` by :data:`mediastream.backends.backends`.

    ``close()`` releases what the backend holds (a child process, a connection
    pool) without waiting, so the handler can call it from a ``setting_changed``
    receiver or at process exit; ``aclose()`` does the same and waits until it is
    done. Both are safe to call twice, and a closed backend that is used again
    acquires what it needs again.
    """

    def __init__(self, **options: Any) -> None:
        if options:
            raise TypeError(f"{type(self).__name__} takes no options, got {sorted(options)}")

    async def warm_up(self) -> None:
        """Load models or start workers ahead of the first call (optional)."""

    def close(self) -> None:
        """Release processes or connections held by the backend, without waiting."""

    async def aclose(self) -> None:
        """Release processes or connections held by the backend, and wait until they are gone."""
        self.close()
