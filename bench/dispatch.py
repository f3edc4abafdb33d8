"""What-if switch kept for comparisons: ``BENCH_DISPATCH=pump``.

The experiment that lived here (one long-lived reader task per source instead
of channels' task-per-message ``await_many_dispatch``) is now the consumer's own
receive loop, ``mediastream.dispatch.dispatch_loop``. ``install()`` still puts
it in place of channels' function for any *other* consumer in the process.
"""

from __future__ import annotations

from mediastream.dispatch import dispatch_loop as pump_await_many_dispatch

__all__ = ["install", "pump_await_many_dispatch"]


def install() -> None:
    import channels.consumer

    channels.consumer.await_many_dispatch = pump_await_many_dispatch
