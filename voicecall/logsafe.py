"""Make untrusted text safe for one log line.

Twilio parameters, request paths and stream errors come from outside; written
raw they could forge log lines (newlines), hide text (control characters) or
flood the log. :func:`sanitize` keeps one short printable line.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["sanitize"]

_WHITESPACE = re.compile(r"\s+")


def sanitize(text: object, limit: int = 120) -> str:
    """Return ``text`` as one printable line of at most ``limit`` characters plus "...".

    Control and other non-printable characters become spaces, runs of
    whitespace collapse to one space, and longer text is cut at ``limit``
    characters with "..." appended. ``None`` becomes an empty string.
    """
    if text is None:
        return ""
    value = text if isinstance(text, str) else str(text)
    value = "".join(
        " " if unicodedata.category(char)[0] in ("C", "Z") else char for char in value
    )
    value = _WHITESPACE.sub(" ", value).strip()
    if len(value) > limit:
        return value[:limit].rstrip() + "..."
    return value
