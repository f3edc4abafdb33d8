"""Agent tools: plain Python callables described to the model, and run safely for it.

A tool is a function (sync or async) named by dotted path in an agent's
``TOOLS``. Its JSON schema comes from the signature and type hints (``str``,
``int``, ``float``, ``bool``, ``Literal``, ``Enum``, ``list[...]``,
``Optional``, defaults) and its docstring (first paragraph: the description;
``Args:`` or ``:param x:`` lines: the parameters'). A parameter annotated
:class:`~mediastream.agents.base.CallContext` is filled in by the server and
never shown to the model.

A *client tool* is a dict ``{"name", "description", "parameters", "client":
True}``: the model may call it, but it runs in the browser (the talk relay
passes it on), so it has no callable here.

:class:`ToolBox` runs a model's tool call and never raises: bad arguments, a
timeout, or the tool's own exception become an error result the model reads
(``{"error": "..."}``), so a broken tool never ends a call.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import json
import logging
import re
import time
import types
import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from voicecall.logsafe import sanitize

from .calls import CallContext, ToolCall

__all__ = [
    "DEFAULT_TOOLS_SETTING",
    "Tool",
    "ToolBox",
    "ToolDefinitionError",
    "ToolError",
    "ToolResult",
    "load_tools",
]

logger = logging.getLogger(__name__)

DEFAULT_TOOLS_SETTING = 'MEDIASTREAM["AGENT"]["OPTIONS"]["TOOLS"]'
#: The model's function names: OpenAI accepts these characters, at most 64 of them.
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Error text the model sees is one line of at most this many characters.
MAX_ERROR_CHARS = 300

ClientRunner = Callable[[ToolCall, CallContext], Awaitable[Any]]


class ToolDefinitionError(ValueError):
    """A callable or client-tool dict that cannot be described to a model."""


class ToolError(Exception):
    """Raised by a tool for a failure the model should read as it is (no traceback is logged)."""


# --- describing a tool -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tool:
    """One tool as the model sees it (``name``, ``description``, ``parameters``) and how to run it."""

    name: str
    description: str
    #: A JSON schema of type ``object``.
    parameters: dict[str, Any]
    #: The callable; None for a client tool.
    function: Callable[..., Any] | None = None
    client: bool = False
    #: The parameter that receives the :class:`CallContext`, if any.
    context_parameter: str | None = None
    #: Annotations of the model-visible parameters, for checking arguments.
    hints: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_callable(cls, function: Callable[..., Any], *, name: str | None = None) -> Tool:
        """Describe ``function`` from its signature, type hints and docstring."""
        if not callable(function):
            raise ToolDefinitionError(f"{function!r} is not callable")
        tool_name = name or getattr(function, "__name__", "")
        if not TOOL_NAME.match(tool_name):
            raise ToolDefinitionError(
                f"tool name {tool_name!r} must be 1-64 letters, digits, '_' or '-'"
            )
        summary, documented = parse_docstring(inspect.getdoc(function) or "")
        try:
            signature = inspect.signature(function)
            hints = typing.get_type_hints(function)
        except (TypeError, ValueError, NameError) as exc:
            raise ToolDefinitionError(f"cannot read the signature of {tool_name}: {exc}") from exc
        properties: dict[str, Any] = {}
        required: list[str] = []
        visible: dict[str, Any] = {}
        context_parameter = None
        for parameter in signature.parameters.values():
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                raise ToolDefinitionError(
                    f"{tool_name}: *{parameter.name} cannot be described to a model; name each parameter"
                )
            if parameter.kind is parameter.POSITIONAL_ONLY:
                raise ToolDefinitionError(f"{tool_name}: {parameter.name} must be passable by keyword")
            annotation = hints.get(parameter.name, Any)
            if annotation is CallContext:
                context_parameter = parameter.name
                continue
            try:
                schema = json_schema(annotation)
            except ToolDefinitionError as exc:
                raise ToolDefinitionError(f"{tool_name}({parameter.name}): {exc}") from None
            if parameter.name in documented:
                schema["description"] = documented[parameter.name]
            if parameter.default is parameter.empty:
                required.append(parameter.name)
            else:
                default = _json_default(parameter.default)
                if default is not _NO_DEFAULT:
                    schema["default"] = default
            properties[parameter.name] = schema
            visible[parameter.name] = annotation
        parameters: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
        return cls(
            name=tool_name,
            description=summary,
            parameters=parameters,
            function=function,
            context_parameter=context_parameter,
            hints=visible,
        )

    @classmethod
    def from_client_spec(cls, spec: Mapping[str, Any]) -> Tool:
        """A client tool from ``{"name", "description", "parameters", "client": True}``."""
        unknown = set(spec) - {"name", "description", "parameters", "client"}
        if unknown:
            raise ToolDefinitionError(f"client tool has unknown keys {sorted(unknown)}")
        if spec.get("client") is not True:
            raise ToolDefinitionError('a tool dict must say "client": True (server tools are dotted paths)')
        name = spec.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise ToolDefinitionError(f"client tool name {name!r} must be 1-64 letters, digits, '_' or '-'")
        description = spec.get("description", "")
        if not isinstance(description, str):
            raise ToolDefinitionError(f"client tool {name}: description must be a string")
        parameters = spec.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(parameters, dict) or parameters.get("type") != "object":
            raise ToolDefinitionError(f'client tool {name}: parameters must be a JSON schema of "type": "object"')
        return cls(name=name, description=description, parameters=dict(parameters), client=True)

    def spec(self) -> dict[str, Any]:
        """``{"name", "description", "parameters"}``: what every vendor's tool format is built from."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


_NO_DEFAULT = object()


def _json_default(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        value = value.value
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return _NO_DEFAULT
    return value


_SIMPLE = {str: "string", int: "integer", float: "number", bool: "boolean"}
_JSON_TYPE = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


def json_schema(annotation: Any) -> dict[str, Any]:
    """The JSON schema of one parameter's type hint."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return {}
    if annotation in _SIMPLE:
        return {"type": _SIMPLE[annotation]}
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        values = [member.value for member in annotation]
        return {**_enum_type(values), "enum": values}
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return {**_enum_type(list(args)), "enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        members = [arg for arg in args if arg is not type(None)]
        if len(members) != 1:
            raise ToolDefinitionError(f"unions other than Optional[X] are not supported: {annotation}")
        schema = json_schema(members[0])
        if len(members) < len(args):  # Optional
            if isinstance(schema.get("type"), str):
                schema["type"] = [schema["type"], "null"]
            if "enum" in schema:
                schema["enum"] = [*schema["enum"], None]
        return schema
    if annotation in (list, tuple, set, frozenset) or origin in (list, tuple, set, frozenset, Sequence, Iterable):
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            raise ToolDefinitionError(f"fixed-length tuples are not supported: {annotation}")
        item = args[0] if args else Any
        return {"type": "array", "items": json_schema(item)}
    if annotation is dict or origin in (dict, Mapping):
        return {"type": "object"}
    raise ToolDefinitionError(f"type {annotation!r} cannot be described as JSON")


def _enum_type(values: list[Any]) -> dict[str, Any]:
    kinds = {_JSON_TYPE.get(type(value)) for value in values}
    if len(kinds) == 1 and None not in kinds:
        return {"type": kinds.pop()}
    return {}


_SECTION = re.compile(r"^(\w+(?: \w+)?)\s*:\s*$")
_ARGS_SECTIONS = {"Args", "Arguments", "Parameters", "Params", "Keyword Args", "Keyword Arguments"}
_GOOGLE_ARG = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_SPHINX_PARAM = re.compile(r"^:param\s+(?:[^:]*\s)?(\w+)\s*:\s*(.*)$")


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(description, {parameter: description}) from a Google-style or Sphinx-style docstring.

    The description is the first paragraph; a parameter's text is its line
    in an ``Args:`` section (``name (type): text``) or its ``:param name:``
    field, with the lines that continue it.
    """
    lines = inspect.cleandoc(doc).splitlines() if doc else []
    summary: list[str] = []
    for line in lines:
        stripped = line.strip()
        if not stripped or stripped.startswith(":") or _SECTION.match(stripped):
            break
        summary.append(stripped)
    params: dict[str, str] = {}
    current: str | None = None
    in_args = False
    heading_indent = arg_indent = 0
    for line in lines:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if not stripped:
            if not in_args:
                current = None
            continue
        sphinx = _SPHINX_PARAM.match(stripped)
        if sphinx:
            in_args = False
            current, arg_indent = sphinx.group(1), indent
            params[current] = sphinx.group(2).strip()
            continue
        heading = _SECTION.match(stripped)
        if heading and (not in_args or indent <= heading_indent):
            in_args = heading.group(1) in _ARGS_SECTIONS
            heading_indent, arg_indent, current = indent, -1, None
            continue
        if in_args:
            if indent <= heading_indent:
                in_args, current = False, None
                continue
            if arg_indent < 0:
                arg_indent = indent
            match = _GOOGLE_ARG.match(stripped)
            if indent == arg_indent and match:
                current = match.group(1)
                params[current] = match.group(2).strip()
            elif current is not None:
                params[current] = f"{params[current]} {stripped}".strip()
            continue
        if current is not None and not stripped.startswith(":"):
            params[current] = f"{params[current]} {stripped}".strip()  # a :param field's next line
        else:
            current = None
    return " ".join(summary), params


# --- loading the TOOLS setting -----------------------------------------------------------------------


def load_tools(entries: Iterable[Any] | None, *, setting: str = DEFAULT_TOOLS_SETTING) -> list[Tool]:
    """Tools from dotted paths, callables, :class:`Tool` objects and client-tool dicts.

    Every error names ``setting`` and the entry, so a typo in the settings is
    found at startup rather than when a caller asks for the tool.
    """
    if entries is None:
        return []
    if isinstance(entries, (str, bytes, Mapping)) or not isinstance(entries, Iterable):
        raise ImproperlyConfigured(f"{setting} must be a list of dotted paths or client-tool dicts.")
    tools: list[Tool] = []
    for index, entry in enumerate(entries):
        where = f"{setting}[{index}]"
        try:
            tools.append(_load_tool(entry))
        except ImportError as exc:
            raise ImproperlyConfigured(f"Could not import the tool {entry!r} named in {where}: {exc}") from exc
        except ToolDefinitionError as exc:
            raise ImproperlyConfigured(f"The tool {_label(entry)} in {where} cannot be used: {exc}") from exc
    seen: set[str] = set()
    for tool in tools:
        if tool.name in seen:
            raise ImproperlyConfigured(f"{setting} names two tools called {tool.name!r}.")
        seen.add(tool.name)
    return tools


def _load_tool(entry: Any) -> Tool:
    if isinstance(entry, Tool):
        return entry
    if isinstance(entry, str):
        return Tool.from_callable(import_string(entry))
    if isinstance(entry, Mapping):
        return Tool.from_client_spec(entry)
    if callable(entry):
        return Tool.from_callable(entry)
    raise ToolDefinitionError("expected a dotted path, a callable or a client-tool dict")


def _label(entry: Any) -> str:
    if isinstance(entry, Mapping):
        return repr(entry.get("name", entry))
    return repr(entry) if isinstance(entry, str) else getattr(entry, "__qualname__", repr(entry))


# --- running a tool ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool call came to. ``output`` is the JSON text the model reads."""

    call: ToolCall
    ok: bool
    output: str
    error: str = ""
    duration_ms: float = 0.0
    #: The tool's return value (None on error), for the engine's own markers such as ``end_call``.
    value: Any = None

    @property
    def ends_call(self) -> bool:
        """The tool asked for the call to end once the reply has played (the ``end_call`` marker)."""
        return self.ok and isinstance(self.value, Mapping) and self.value.get("end_call") is True


class _ArgumentError(Exception):
    pass


class ToolBox:
    """The tools of one agent, run on the model's behalf with a timeout; :meth:`run` never raises.

    A sync tool runs in a worker thread (``asyncio.to_thread``): a timeout
    answers the model at once, but the thread itself finishes in its own time.
    Client tools go to ``client_runner`` (the talk relay); without one their
    calls are answered with an error the model can explain to the caller.
    """

    def __init__(
        self,
        tools: Iterable[Tool] = (),
        *,
        timeout: float = 10.0,
        client_runner: ClientRunner | None = None,
    ) -> None:
        self.tools: dict[str, Tool] = {tool.name: tool for tool in tools}
        self.timeout = timeout
        self.client_runner = client_runner
        self._failed_tools: set[str] = set()

    def __contains__(self, name: object) -> bool:
        return name in self.tools

    def specs(self) -> list[dict[str, Any]]:
        return [tool.spec() for tool in self.tools.values()]

    async def run(self, call: ToolCall, context: CallContext) -> ToolResult:
        """Run ``call`` for ``context``'s call; every failure is an error result, never an exception."""
        started = time.perf_counter()
        tool = self.tools.get(call.name)
        try:
            if tool is None:
                known = ", ".join(sorted(self.tools)) or "none"
                raise _ArgumentError(f"there is no tool called {call.name!r} (tools: {known})")
            _check_json_object(call)
            async with asyncio.timeout(self.timeout):
                value = await self._invoke(tool, call, context)
            output = json.dumps(value, default=str, ensure_ascii=False)
        except TimeoutError:
            return self._failed(call, started, f"the tool {call.name} timed out after {self.timeout:g} s")
        except _ArgumentError as exc:
            return self._failed(call, started, f"bad arguments: {exc}")
        except ToolError as exc:
            return self._failed(call, started, str(exc) or type(exc).__name__)
        except Exception as exc:
            # The first failure of each tool carries its traceback; repeats are one line each.
            first = call.name not in self._failed_tools
            self._failed_tools.add(call.name)
            logger.warning(
                "Tool %s failed on call %s: %s",
                call.name,
                sanitize(context.call_sid, 64),
                sanitize(f"{type(exc).__name__}: {exc}", MAX_ERROR_CHARS),
                exc_info=first,
            )
            return self._failed(call, started, f"{type(exc).__name__}: {exc}")
        return ToolResult(call, True, output, duration_ms=_ms_since(started), value=value)

    async def _invoke(self, tool: Tool, call: ToolCall, context: CallContext) -> Any:
        if tool.client:
            if self.client_runner is None:
                raise ToolError(f"{tool.name} runs on the caller's screen, and no screen is connected")
            return await self.client_runner(call, context)
        assert tool.function is not None
        kwargs = bind_arguments(tool, call.arguments)
        if tool.context_parameter:
            kwargs[tool.context_parameter] = context
        function = tool.function
        if inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(getattr(function, "__call__", None)):
            result = await function(**kwargs)
        else:
            result = await asyncio.to_thread(function, **kwargs)
        if inspect.isawaitable(result):  # a sync wrapper around a coroutine function
            result = await result
        return result

    def _failed(self, call: ToolCall, started: float, error: str) -> ToolResult:
        error = sanitize(error, MAX_ERROR_CHARS)
        return ToolResult(
            call, False, json.dumps({"error": error}, ensure_ascii=False), error=error, duration_ms=_ms_since(started)
        )


def _check_json_object(call: ToolCall) -> None:
    raw = call.raw_arguments.strip()
    if not raw:
        return
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise _ArgumentError("the arguments are not valid JSON") from None
    if not isinstance(parsed, dict):
        raise _ArgumentError("the arguments must be a JSON object")


def bind_arguments(tool: Tool, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The model's arguments checked against the tool's parameters and converted to their types."""
    unknown = sorted(set(arguments) - set(tool.hints))
    if unknown:
        raise _ArgumentError(f"unknown parameter(s) {', '.join(unknown)}")
    missing = [name for name in tool.parameters.get("required", ()) if name not in arguments]
    if missing:
        raise _ArgumentError(f"missing required parameter(s) {', '.join(missing)}")
    converted: dict[str, Any] = {}
    for name, value in arguments.items():
        try:
            converted[name] = convert(value, tool.hints[name])
        except (TypeError, ValueError) as exc:
            raise _ArgumentError(f"{name}: {exc}") from None
    return converted


def convert(value: Any, annotation: Any) -> Any:
    """``value`` (parsed JSON) as ``annotation``; numbers and booleans sent as strings are accepted."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (member,) = [arg for arg in args if arg is not type(None)]
        return convert(value, member)
    if origin is typing.Literal:
        for choice in args:
            if value == choice or (isinstance(choice, (int, float)) and str(choice) == str(value)):
                return choice
        raise ValueError(f"must be one of {list(args)}, got {value!r}")
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        for member in annotation:
            if value == member.value or str(member.value) == str(value):
                return member
        raise ValueError(f"must be one of {[m.value for m in annotation]}, got {value!r}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError(f"must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ValueError(f"must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
            return int(value)
        raise ValueError(f"must be an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            return float(value)
        raise ValueError(f"must be a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"must be a string, got {value!r}")
    if annotation in (list, tuple, set, frozenset) or origin in (list, tuple, set, frozenset, Sequence, Iterable):
        if not isinstance(value, list):
            raise ValueError(f"must be a list, got {value!r}")
        item = args[0] if args else Any
        items = [convert(element, item) for element in value]
        container = origin if origin in (list, tuple, set, frozenset) else (annotation if isinstance(annotation, type) else list)
        return container(items)
    if annotation is dict or origin in (dict, Mapping):
        if not isinstance(value, dict):
            raise ValueError(f"must be an object, got {value!r}")
        return value
    return value


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
