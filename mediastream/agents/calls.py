"""What a tool call is, and which call it runs for: the vocabulary tools and agents share.

Kept apart from both (``tools.py`` runs tools, ``base.py`` is the agent
contract) so that each imports it and neither imports the other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CallContext", "ToolCall"]


@dataclass(frozen=True, slots=True)
class CallContext:
    """Which call a reply or a tool runs for."""

    call_sid: str
    stream_sid: str = ""
    turn_id: int = 0


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model asked for a tool: ``arguments`` is the parsed JSON object (``raw_arguments`` as sent)."""

    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    raw_arguments: str = ""

    @classmethod
    def parse(cls, id: str, name: str, raw_arguments: str) -> ToolCall:
        """Arguments as the model sent them; unparseable JSON becomes ``{}`` (the tool then reports what is missing)."""
        try:
            arguments = json.loads(raw_arguments) if raw_arguments.strip() else {}
        except ValueError:
            arguments = {}
        return cls(id, name, arguments if isinstance(arguments, dict) else {}, raw_arguments)
