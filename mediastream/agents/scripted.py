"""An embedded agent that needs no network and no key: intents, keypad menus and tools from a script.

For the demo and for tests. The script is in OPTIONS, or in a Python module
named by ``SCRIPT`` whose upper-case attributes are the same options (OPTIONS
given as well win)::

    MEDIASTREAM["AGENT"] = {
        "BACKEND": "mediastream.agents.scripted.ScriptedAgent",
        "OPTIONS": {"SCRIPT": "mediastream.agents.demo"},
    }

Options:

* ``GREETING``: spoken when the stream starts.
* ``INTENTS``: a list, tried in order, of ``{"keywords": [...]}`` (whole
  words, any case) or ``{"pattern": regex}`` (searched, any case, in the
  caller's words with number words as digits: "for four" is "for 4"), each
  with a ``"reply"``. An intent may name a ``"tool"``: ``{"name", "arguments"}``,
  whose string arguments are templates filled from the pattern's named
  groups (``"{party_size}"``). Then ``"before"`` is said first, the tool is
  called, and ``"reply"`` is said after it with ``{field}`` filled from the
  tool's JSON result and the arguments (``"error_reply"`` when the tool
  failed; ``{error}`` is its error).
* ``DTMF``: ``{digit: reply}`` or ``{digit: {like an intent, without a match}}``.
* ``FALLBACK``: said when nothing matches.
* ``TOOLS``: dotted paths (every tool an intent names must be one of them);
  ``TOOL_TIMEOUT``; ``INSTRUCTIONS`` (accepted, unused: there is no model).
* ``DELAY_MS`` (before the first word of each reply) and ``CHARS_PER_SECOND``
  (pacing of the words after it) simulate a slow model in tests and benchmarks.

Replies stream word by word. Which intent asked for a tool travels in the
tool call's id, so a follow-up reply needs nothing but the conversation.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import string
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .base import BaseAgent, CallContext, ChatMessage, TextDelta, ToolCall, ToolCallRequest

__all__ = ["ScriptedAgent", "Step"]

DEFAULT_FALLBACK = "Sorry, I did not understand that."
DEFAULT_ERROR_REPLY = "Sorry, I could not do that right now."

_SCRIPT_KEYS = ("INSTRUCTIONS", "GREETING", "INTENTS", "DTMF", "FALLBACK", "TOOLS")
_STEP_KEYS = {"reply", "before", "tool", "error_reply"}
_ID_PREFIX = "scripted"

_NUMBER_WORDS = {
    word: str(number)
    for number, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
}
_NUMBER_WORD = re.compile(r"\b(" + "|".join(_NUMBER_WORDS) + r")\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Step:
    """What the agent does for a matched intent or key: say, maybe call a tool, say again."""

    reply: str = ""
    before: str = ""
    tool: str = ""
    arguments: Mapping[str, Any] | None = None
    error_reply: str = DEFAULT_ERROR_REPLY


@dataclass(frozen=True, slots=True)
class _Intent:
    matcher: re.Pattern[str]
    on_digits: bool  # a pattern (matched with number words as digits) rather than keywords
    step: Step


class ScriptedAgent(BaseAgent):
    """Keyword and pattern intents, keypad menus and tools; no model, no network."""

    def __init__(
        self,
        *,
        SCRIPT: str | None = None,
        INSTRUCTIONS: str | None = None,
        GREETING: str | None = None,
        INTENTS: Sequence[Mapping[str, Any]] | None = None,
        DTMF: Mapping[str, Any] | None = None,
        FALLBACK: str | None = None,
        TOOLS: Sequence[Any] | None = None,
        TOOL_TIMEOUT: float = 10.0,
        DELAY_MS: float = 0,
        CHARS_PER_SECOND: float | None = None,
    ) -> None:
        given = {
            "INSTRUCTIONS": INSTRUCTIONS,
            "GREETING": GREETING,
            "INTENTS": INTENTS,
            "DTMF": DTMF,
            "FALLBACK": FALLBACK,
            "TOOLS": TOOLS,
        }
        script = {**_script_options(SCRIPT), **{k: v for k, v in given.items() if v is not None}}
        super().__init__(
            INSTRUCTIONS=script.get("INSTRUCTIONS") or "",
            GREETING=script.get("GREETING") or "",
            TOOLS=script.get("TOOLS") or (),
            TOOL_TIMEOUT=TOOL_TIMEOUT,
        )
        if isinstance(DELAY_MS, bool) or not isinstance(DELAY_MS, (int, float)) or DELAY_MS < 0:
            raise ValueError(f"DELAY_MS must be a number of milliseconds >= 0, got {DELAY_MS!r}")
        if CHARS_PER_SECOND is not None and (
            isinstance(CHARS_PER_SECOND, bool) or not isinstance(CHARS_PER_SECOND, (int, float)) or CHARS_PER_SECOND <= 0
        ):
            raise ValueError(f"CHARS_PER_SECOND must be a positive number or None, got {CHARS_PER_SECOND!r}")
        self.delay = DELAY_MS / 1000
        self.chars_per_second = CHARS_PER_SECOND
        self.fallback = script.get("FALLBACK") or DEFAULT_FALLBACK
        self.intents = [self._intent(i, entry) for i, entry in enumerate(script.get("INTENTS") or ())]
        dtmf = script.get("DTMF") or {}
        if not isinstance(dtmf, Mapping):
            raise ValueError("DTMF must be a dict of digit -> reply (or step)")
        self.dtmf = {str(digit): self._step(f"DTMF[{digit!r}]", entry) for digit, entry in dtmf.items()}

    # --- the script --------------------------------------------------------------------------------------

    def _intent(self, index: int, entry: Any) -> _Intent:
        where = f"INTENTS[{index}]"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where} must be a dict with keywords or a pattern, and a reply")
        keywords, pattern = entry.get("keywords"), entry.get("pattern")
        if (keywords is None) == (pattern is None):
            raise ValueError(f"{where} needs exactly one of keywords or pattern")
        if keywords is not None:
            if isinstance(keywords, str) or not keywords or not all(isinstance(k, str) and k.strip() for k in keywords):
                raise ValueError(f"{where}: keywords must be a list of words")
            alternatives = "|".join(re.escape(k.strip()) for k in keywords)
            matcher = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)
        else:
            try:
                matcher = re.compile(pattern, re.IGNORECASE)
            except (re.error, TypeError) as exc:
                raise ValueError(f"{where}: pattern {pattern!r} is not a regular expression: {exc}") from None
        step = self._step(where, {k: v for k, v in entry.items() if k not in ("keywords", "pattern")})
        return _Intent(matcher, pattern is not None, step)

    def _step(self, where: str, entry: Any) -> Step:
        if isinstance(entry, str):
            return Step(reply=entry)
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where} must be a reply or a dict with a reply")
        unknown = set(entry) - _STEP_KEYS
        if unknown:
            raise ValueError(f"{where} has unknown keys {sorted(unknown)}")
        texts = {key: entry.get(key, "") for key in ("reply", "before")}
        if not all(isinstance(text, str) for text in texts.values()):
            raise ValueError(f"{where}: reply and before must be strings")
        tool = entry.get("tool")
        if tool is None:
            if not texts["reply"]:
                raise ValueError(f"{where} needs a reply or a tool")
            return Step(reply=texts["reply"])
        if isinstance(tool, str):
            tool = {"name": tool}
        if not isinstance(tool, Mapping) or not isinstance(tool.get("name"), str):
            raise ValueError(f"{where}: tool must be a name or a dict with a name and arguments")
        known = {t.name for t in self.tools}
        if tool["name"] not in known:
            raise ValueError(f"{where} names the tool {tool['name']!r}, which is not in TOOLS ({sorted(known)})")
        arguments = tool.get("arguments") or {}
        if not isinstance(arguments, Mapping):
            raise ValueError(f"{where}: tool arguments must be a dict")
        return Step(
            reply=texts["reply"],
            before=texts["before"],
            tool=tool["name"],
            arguments=dict(arguments),
            error_reply=entry.get("error_reply") or DEFAULT_ERROR_REPLY,
        )

    # --- replying ------------------------------------------------------------------------------------------

    async def reply(
        self, messages: Sequence[ChatMessage], *, tools: Sequence[Any] = (), call: CallContext | None = None
    ) -> AsyncIterator[TextDelta | ToolCallRequest]:
        if not messages:
            return
        last = messages[-1]
        if last.role == "tool":
            text = self._after_tool(messages)
            async for delta in self._speak(text):
                yield delta
            return
        if last.role != "user":
            return
        step, source, groups = self._match(last)
        async for delta in self._speak(step.before if step.tool else step.reply):
            yield delta
        if step.tool:
            if not step.before:
                await self._first_token_delay()
            arguments = {name: _fill_argument(value, groups) for name, value in (step.arguments or {}).items()}
            call_id = f"{_ID_PREFIX}-{source}-{uuid.uuid4().hex[:8]}"
            yield ToolCallRequest(ToolCall(call_id, step.tool, arguments, json.dumps(arguments)))

    def _match(self, message: ChatMessage) -> tuple[Step, str, dict[str, str]]:
        """The step for the caller's words or keys, the source for the tool call id, and the pattern's groups."""
        if message.dtmf and not message.content:
            step = self.dtmf.get(message.dtmf.strip())
            if step is not None:
                return step, f"dtmf.{message.dtmf.strip()}", {}
            return Step(reply=self.fallback), "fallback", {}
        words = message.content
        digits = _NUMBER_WORD.sub(lambda m: _NUMBER_WORDS[m.group(1).lower()], words)
        for index, intent in enumerate(self.intents):
            found = intent.matcher.search(digits if intent.on_digits else words)
            if found:
                groups = {k: v for k, v in found.groupdict().items() if v is not None}
                return intent.step, f"intent.{index}", groups
        return Step(reply=self.fallback), "fallback", {}

    def _step_for_call_id(self, call_id: str) -> Step | None:
        parts = call_id.split("-")
        if len(parts) != 3 or parts[0] != _ID_PREFIX:
            return None
        kind, _, key = parts[1].partition(".")
        if kind == "intent" and key.isdigit() and int(key) < len(self.intents):
            return self.intents[int(key)].step
        if kind == "dtmf":
            return self.dtmf.get(key)
        return None

    def _after_tool(self, messages: Sequence[ChatMessage]) -> str:
        """The reply after a tool result: the step's template filled from the result and the arguments."""
        result = messages[-1]
        step = self._step_for_call_id(result.tool_call_id)
        if step is None:
            return ""
        arguments: dict[str, Any] = {}
        for message in reversed(messages[:-1]):
            match = next((c for c in message.tool_calls if c.id == result.tool_call_id), None)
            if match is not None:
                arguments = dict(match.arguments)
                break
        try:
            value = json.loads(result.content) if result.content else None
        except ValueError:
            value = result.content
        fields: dict[str, Any] = {**arguments, "result": value}
        if isinstance(value, Mapping):
            fields.update(value)
        failed = isinstance(value, Mapping) and set(value) == {"error"}
        return _fill(step.error_reply if failed else step.reply, fields)

    async def _speak(self, text: str) -> AsyncIterator[TextDelta]:
        words = re.findall(r"\S+\s*", text)
        if not words:
            return
        await self._first_token_delay()
        for index, word in enumerate(words):
            if index and self.chars_per_second:
                await asyncio.sleep(len(word) / self.chars_per_second)
            yield TextDelta(word)

    async def _first_token_delay(self) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)


def _script_options(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    if not isinstance(path, str):
        raise ValueError(f"SCRIPT must be a module path, got {path!r}")
    try:
        module = importlib.import_module(path)
    except ImportError as exc:
        raise ValueError(f"SCRIPT {path!r} cannot be imported: {exc}") from exc
    return {key: getattr(module, key) for key in _SCRIPT_KEYS if getattr(module, key, None) is not None}


class _Template(string.Formatter):
    """``str.format`` where a missing field is empty rather than an error."""

    def get_value(self, key: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if isinstance(key, int):
            return args[key] if key < len(args) else ""
        return kwargs.get(key, "")


_TEMPLATE = _Template()


def _fill(template: str, fields: Mapping[str, Any]) -> str:
    try:
        return _TEMPLATE.vformat(template, (), fields)
    except (ValueError, IndexError, AttributeError, KeyError, TypeError):
        return template  # a malformed template is said as written


def _fill_argument(value: Any, groups: Mapping[str, str]) -> Any:
    if not isinstance(value, str):
        return value
    return _fill(value, groups).strip()
