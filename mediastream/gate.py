"""What a new media stream socket passes after the session's own per-process caps: the drain and the global cap.

The session (sans I/O) decides on the signature and this process's caps; the
consumer then asks :func:`screen`, which may turn the session's ``Accept``
into a refusal (daphne answers 403): while this process drains
(:mod:`mediastream.draining`), or when the deployment's open sockets reach the
global ``MAX_CONNECTIONS`` (:mod:`mediastream.globalcaps`, one Redis call).
An admitted socket is listed for the drain; :func:`release` undoes both at
teardown.
"""

from __future__ import annotations

from collections.abc import Callable

from . import session as s
from .closing import CLOSES
from .draining import draining
from .globalcaps import caps

__all__ = ["release", "screen"]


async def screen(
    session: s.StreamSession, actions: list[s.Action], perform: Callable[[list[s.Action]], None]
) -> list[s.Action]:
    """``actions`` as the session returned them, or a refusal.

    ``perform`` runs the session's actions from a callback: it closes the
    stream (4013 "Server shutting down") when a drain's grace is over.
    """
    if not actions or not isinstance(actions[0], s.Accept):
        return actions
    conn_id = session.conn_id
    if draining.active:
        return _refuse(session, "server draining", "Refused media stream handshake from %s: server draining")
    closing = any(isinstance(action, s.CloseSocket) for action in actions)  # accepted only to be closed at once
    global_caps = caps.get()
    if global_caps is not None and not closing and not await global_caps.acquire(conn_id):
        return _refuse(
            session,
            "MAX_CONNECTIONS (global)",
            "Refused media stream handshake from %s: %d connections open across the processes (MAX_CONNECTIONS)",
            global_caps.limits.max_connections,
        )
    if draining.active:  # the drain began while Redis answered
        release(conn_id)
        return _refuse(session, "server draining", "Refused media stream handshake from %s: server draining")
    draining.add(conn_id, lambda: perform(session.close(CLOSES.SHUTDOWN)))
    return actions


def release(conn_id: str) -> None:
    """The socket's teardown: it no longer counts anywhere; safe to call more than once."""
    draining.discard(conn_id)
    global_caps = caps.get()
    if global_caps is not None:
        global_caps.release(conn_id)


def _refuse(session: s.StreamSession, reason: str, message: str, *args: object) -> list[s.Action]:
    session.registry.release(session.conn_id)
    session.refusals.refused(reason, message, session.client_ip, *args)
    return [s.Refuse()]
