"""Which agent answers a call: the call's own, the selector's choice, or ``MEDIASTREAM["AGENT"]``.

In order:

1. the call's own agent config (``Call.agent``, set by ``place_call(agent=...)``);
2. ``MEDIASTREAM["AGENT_SELECTOR"]``: a callable ``(call) -> config or None``,
   e.g. one agent per dialled number;
3. ``MEDIASTREAM["AGENT"]`` (``backends.agent``); None means no agent.

A config is ``{"BACKEND": ..., "OPTIONS": {...}}`` like ``MEDIASTREAM["AGENT"]``,
or a dotted path: of an agent class (built without OPTIONS) or of such a dict.
Each distinct config is built once and shared by the calls that use it (an
agent holds a connection pool, not a conversation); the least recently used
are closed past :data:`MAX_CACHED_AGENTS`, and all are closed when
``MEDIASTREAM`` changes or the process exits. A closed agent that is still in
use reopens what it needs.
"""

from __future__ import annotations

import atexit
import inspect
import json
import logging
import threading
from collections import OrderedDict
from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from ..backends import InvalidBackendError, backends, load_backend
from ..conf import app_settings
from .base import AgentBackend

__all__ = ["MAX_CACHED_AGENTS", "aagent_for_call", "agent_for_call", "build_agent", "close_cached_agents"]

logger = logging.getLogger(__name__)

#: Distinct per-call configs kept built (each may hold a connection pool).
MAX_CACHED_AGENTS = 32

_cache: OrderedDict[str, AgentBackend] = OrderedDict()
_lock = threading.Lock()


def agent_for_call(call: Any) -> AgentBackend | None:
    """The agent for ``call`` (a ``voicecall.models.Call``); sync code only (a selector may query the database)."""
    own = _own_config(call)
    if own is not None:
        return build_agent(own, source=f"the agent config of call {getattr(call, 'call_sid', '?')}")
    selector = _selector()
    if selector is not None:
        if inspect.iscoroutinefunction(selector):
            raise ImproperlyConfigured(
                'MEDIASTREAM["AGENT_SELECTOR"] is a coroutine function: call aagent_for_call() from async code.'
            )
        chosen = selector(call)
        if chosen is not None:
            return build_agent(chosen, source='MEDIASTREAM["AGENT_SELECTOR"]')
    return backends.agent


async def aagent_for_call(call: Any) -> AgentBackend | None:
    """:func:`agent_for_call` from async code: a sync selector runs in a thread, an async one is awaited."""
    own = _own_config(call)
    if own is not None:
        return build_agent(own, source=f"the agent config of call {getattr(call, 'call_sid', '?')}")
    selector = _selector()
    if selector is not None:
        if inspect.iscoroutinefunction(selector):
            chosen = await selector(call)
        else:
            chosen = await sync_to_async(selector, thread_sensitive=True)(call)
        if chosen is not None:
            return build_agent(chosen, source='MEDIASTREAM["AGENT_SELECTOR"]')
    return backends.agent


def build_agent(config: Any, *, source: str = 'MEDIASTREAM["AGENT"]') -> AgentBackend:
    """The agent built from ``config``, once per distinct config; errors name ``source``."""
    config = _config(config, source)
    if config == app_settings.AGENT:
        return backends.agent  # the configured default, shared with backends.agent
    try:
        key = json.dumps(config, sort_keys=True, default=repr)
    except (TypeError, ValueError) as exc:
        raise InvalidBackendError(f"{source} is not a JSON-like agent config: {exc}") from exc
    with _lock:
        agent = _cache.get(key)
        if agent is not None:
            _cache.move_to_end(key)
            return agent
        try:
            agent = load_backend("AGENT", config, AgentBackend)
        except ImproperlyConfigured as exc:
            raise InvalidBackendError(f"{source}: {exc}") from exc
        _cache[key] = agent
        evicted = _cache.popitem(last=False)[1] if len(_cache) > MAX_CACHED_AGENTS else None
    if evicted is not None:
        _close(evicted)
    return agent


def _config(config: Any, source: str) -> Any:
    """A dotted path as the config it names: an agent class, or a config dict."""
    if not isinstance(config, str):
        return config
    try:
        target = import_string(config)
    except ImportError as exc:
        raise InvalidBackendError(f"Could not import {config!r} named by {source}: {exc}") from exc
    if isinstance(target, type):
        return {"BACKEND": config, "OPTIONS": {}}
    if isinstance(target, dict):
        return target
    raise InvalidBackendError(f"{config!r} named by {source} is neither an agent class nor a config dict")


def close_cached_agents() -> None:
    """Close and drop every agent built for a per-call config."""
    with _lock:
        agents = list(_cache.values())
        _cache.clear()
    for agent in agents:
        _close(agent)


def _own_config(call: Any) -> Any:
    # Call.agent is the JSON field place_call(agent=...) fills; calls without it have no own agent.
    return getattr(call, "agent", None) or None


def _selector() -> Any:
    path = app_settings.AGENT_SELECTOR
    if not path:
        return None
    if callable(path):
        return path
    try:
        return import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(f'Could not import MEDIASTREAM["AGENT_SELECTOR"] {path!r}: {exc}') from exc


def _close(agent: AgentBackend) -> None:
    try:
        agent.close()
    except Exception:
        logger.exception("Closing the %s agent failed", type(agent).__name__)


atexit.register(close_cached_agents)


@receiver(setting_changed)
def _reset_on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "MEDIASTREAM":
        close_cached_agents()
