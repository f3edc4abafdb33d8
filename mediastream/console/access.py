"""Who may use the console: active staff with voicecall's call permissions.

Watching a call needs ``voicecall.view_call`` (the admin's "change" implies
"view", as on the admin's own pages); each action needs
``voicecall.change_call``, the permission voicecall's admin already asks for
its live controls. Both are Django permission checks, so they may query the
database: call them from a thread (``database_sync_to_async``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["VIEW_PERMISSION", "CHANGE_PERMISSION", "may_watch", "may_act"]

VIEW_PERMISSION = "voicecall.view_call"
CHANGE_PERMISSION = "voicecall.change_call"


def _staff(user: Any) -> bool:
    return bool(user is not None and getattr(user, "is_authenticated", False) and user.is_active and user.is_staff)


def may_watch(user: Any) -> bool:
    """Whether ``user`` may follow a call's console."""
    return _staff(user) and (user.has_perm(VIEW_PERMISSION) or user.has_perm(CHANGE_PERMISSION))


def may_act(user: Any) -> bool:
    """Whether ``user`` may say, interrupt, hang up and transfer from the console."""
    return _staff(user) and user.has_perm(CHANGE_PERMISSION)
