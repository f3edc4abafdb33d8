"""The demo agent's script: a restaurant that tells its hours and books tables.

Used by ``bin/run`` and the tests through
``{"BACKEND": "mediastream.agents.scripted.ScriptedAgent", "OPTIONS": {"SCRIPT": "mediastream.agents.demo"}}``.
Try "what are your opening hours", "book a table for four at 7 pm", pressing
1 or 2, and "goodbye". :func:`book_table` keeps nothing: it checks the request
and answers with a confirmation.
"""

from __future__ import annotations

import secrets

from .tools import ToolError

__all__ = ["book_table", "GREETING", "INTENTS", "DTMF", "FALLBACK", "TOOLS"]

HOURS = "We are open from noon to ten p.m., Tuesday to Sunday."
MAX_PARTY = 12


def book_table(party_size: int, time: str) -> dict[str, object]:
    """Book a table at the restaurant.

    Args:
        party_size: How many people, 1 to 12.
        time: When, as the caller said it (e.g. "7 pm").
    """
    if not 1 <= party_size <= MAX_PARTY:
        raise ToolError(f"we take bookings for 1 to {MAX_PARTY} people, not {party_size}")
    if not time.strip():
        raise ToolError("a booking needs a time")
    return {"party_size": party_size, "time": time.strip(), "reference": secrets.token_hex(2).upper()}


INSTRUCTIONS = "You answer the phone at Luigi's, a restaurant: opening hours and table bookings."

GREETING = (
    "Hello, thanks for calling Luigi's. Press 1 or ask for our opening hours, "
    "or tell me how many people and what time you would like a table for."
)

_TIME = r"(?P<time>\d{1,2}(?:[:.]\d{2})?\s*(?:[ap]\.?\s?m\b\.?)?|noon|midday)"

INTENTS = [
    {
        "keywords": ["goodbye", "bye", "that's all", "hang up"],
        "before": "Thanks for calling Luigi's. Goodbye!",
        "tool": {"name": "end_call"},
    },
    {
        # "a table for 4 at 7 pm", "book for two people at 8:30" (number words arrive as digits)
        "pattern": r"(?:table|book|reserv)\D*?(?P<party_size>\d+)\s*(?:people|persons|guests)?\D*?\bat\s+" + _TIME,
        "before": "Let me check that for you.",
        "tool": {"name": "book_table", "arguments": {"party_size": "{party_size}", "time": "{time}"}},
        "reply": "Your table for {party_size} is booked for {time}. Your reference is {reference}.",
        "error_reply": "Sorry, I could not book that: {error}.",
    },
    {
        "keywords": ["book", "booking", "table", "reservation", "reserve"],
        "reply": "I can book a table. How many people, and at what time? For example: a table for four at 7 pm.",
    },
    {"keywords": ["hours", "open", "opening", "close", "closing"], "reply": HOURS},
]

DTMF = {
    "1": HOURS,
    "2": "To book a table, tell me how many people and at what time.",
}

FALLBACK = "Sorry, I can tell you our opening hours or book a table. What would you like?"

TOOLS = ["mediastream.agents.demo.book_table", "mediastream.agents.builtin_tools.end_call"]
