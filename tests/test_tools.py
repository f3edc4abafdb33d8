"""Agent tools: the schema a model sees comes from the function, and a tool call never breaks the call."""

from __future__ import annotations

import asyncio
import enum
import json
import threading
from typing import Literal, Optional

import pytest
from django.core.exceptions import ImproperlyConfigured

from mediastream.agents import builtin_tools
from mediastream.agents.base import CallContext, ToolCall
from mediastream.agents.tools import Tool, ToolBox, ToolDefinitionError, ToolError, load_tools, parse_docstring
from tests.support import mediastream_settings

CONTEXT = CallContext(call_sid="CA" + "1" * 32, stream_sid="MZ1", turn_id=3)


class Size(enum.Enum):
    SMALL = "small"
    LARGE = "large"


def order_pizza(
    topping: str,
    count: int,
    size: Size = Size.LARGE,
    crust: Literal["thin", "thick"] = "thin",
    price_limit: Optional[float] = None,
    extras: list[str] | None = None,
    delivery: bool = False,
    context: CallContext = None,  # type: ignore[assignment]
) -> dict:
    """Order pizzas for the caller.

    The kitchen gets the order at once.

    Args:
        topping: What goes on top, e.g. "mushrooms".
        count (int): How many pizzas,
            at most ten.
        size: The size.
        crust: Thin or thick.
        price_limit: The most the caller pays, in dollars.
        extras: More toppings.
        delivery: Bring it to the caller's address.

    Returns:
        The order.
    """
    return {
        "topping": topping,
        "count": count,
        "size": size.value,
        "crust": crust,
        "price_limit": price_limit,
        "extras": extras,
        "delivery": delivery,
        "call_sid": context.call_sid,
        "turn_id": context.turn_id,
    }


def sphinx_style(city: str, days: int = 1) -> str:
    """Tell the weather forecast.

    :param city: The city, as the caller said it.
    :param int days: How many days ahead,
        counted from today.
    :returns: the forecast
    """
    return f"Sunny in {city} for {days} day(s)."


async def async_lookup(order_id: str) -> dict:
    """Look up an order."""
    await asyncio.sleep(0)
    return {"order_id": order_id, "status": "shipped"}


def who_is_calling(context: CallContext) -> str:
    """Which call this is."""
    return context.call_sid


def broken(value: str) -> str:
    """Always fails."""
    raise KeyError("the database row is gone")


def refuses(value: str) -> str:
    """Fails with a message for the model."""
    raise ToolError("that order cannot be changed any more")


_release = threading.Event()


def blocks_until_released() -> str:
    """Blocks its thread."""
    _release.wait(10)
    return "released"


_sleeping: list[asyncio.Event] = []


async def sleeps_forever() -> str:
    """Never answers."""
    for started in _sleeping:
        started.set()
    await asyncio.Event().wait()
    return "never"


def thread_name() -> str:
    """The thread it ran in."""
    return threading.current_thread().name


def box_of(*functions, timeout: float = 5.0) -> ToolBox:
    return ToolBox([Tool.from_callable(f) for f in functions], timeout=timeout)


async def run(box: ToolBox, name: str, arguments=None, raw: str | None = None):
    arguments = arguments or {}
    return await box.run(ToolCall("call_1", name, arguments, json.dumps(arguments) if raw is None else raw), CONTEXT)


# --- the schema ----------------------------------------------------------------------------------------


def test_the_schema_comes_from_the_signature_hints_and_docstring():
    tool = Tool.from_callable(order_pizza)
    assert tool.name == "order_pizza"
    assert tool.description == "Order pizzas for the caller."
    assert tool.parameters == {
        "type": "object",
        "properties": {
            "topping": {"type": "string", "description": 'What goes on top, e.g. "mushrooms".'},
            "count": {"type": "integer", "description": "How many pizzas, at most ten."},
            "size": {"type": "string", "enum": ["small", "large"], "description": "The size.", "default": "large"},
            "crust": {"type": "string", "enum": ["thin", "thick"], "description": "Thin or thick.", "default": "thin"},
            "price_limit": {
                "type": ["number", "null"],
                "description": "The most the caller pays, in dollars.",
                "default": None,
            },
            "extras": {
                "type": ["array", "null"],
                "items": {"type": "string"},
                "description": "More toppings.",
                "default": None,
            },
            "delivery": {"type": "boolean", "description": "Bring it to the caller's address.", "default": False},
        },
        "required": ["topping", "count"],
    }
    assert tool.context_parameter == "context" and not tool.client
    assert tool.spec() == {"name": "order_pizza", "description": tool.description, "parameters": tool.parameters}


def test_sphinx_docstrings_describe_parameters_too():
    tool = Tool.from_callable(sphinx_style)
    assert tool.description == "Tell the weather forecast."
    assert tool.parameters["properties"] == {
        "city": {"type": "string", "description": "The city, as the caller said it."},
        "days": {"type": "integer", "description": "How many days ahead, counted from today.", "default": 1},
    }
    assert tool.parameters["required"] == ["city"]


def test_a_function_without_a_docstring_or_hints_still_describes_itself():
    def lookup(order_id, verbose=False):
        return order_id

    tool = Tool.from_callable(lookup)
    assert tool.description == ""
    assert tool.parameters["properties"] == {"order_id": {}, "verbose": {"default": False}}
    assert parse_docstring("") == ("", {})


@pytest.mark.parametrize(
    ("function", "message"),
    [
        (lambda *numbers: 0, r"\*numbers cannot be described"),
        (lambda **options: 0, r"\*options cannot be described"),
    ],
)
def test_parameters_a_model_cannot_fill_are_refused(function, message):
    function.__name__ = "variadic"
    with pytest.raises(ToolDefinitionError, match=message):
        Tool.from_callable(function)


def test_types_json_cannot_carry_are_refused_with_the_parameter_named():
    def schedule(when: complex) -> None:
        """Nope."""

    with pytest.raises(ToolDefinitionError, match=r"schedule\(when\): type .*complex"):
        Tool.from_callable(schedule)


def test_client_tools_are_dicts_that_run_in_the_browser():
    spec = {
        "name": "show_map",
        "description": "Show the restaurant on a map.",
        "parameters": {"type": "object", "properties": {"zoom": {"type": "integer"}}},
        "client": True,
    }
    [tool] = load_tools([spec])
    assert tool.client and tool.function is None
    assert tool.spec() == {k: v for k, v in spec.items() if k != "client"}
    with pytest.raises(ImproperlyConfigured, match=r'\["TOOLS"\]\[0\].*"client": True'):
        load_tools([{**spec, "client": False}])
    with pytest.raises(ImproperlyConfigured, match="unknown keys"):
        load_tools([{**spec, "handler": "x"}])


# --- loading the setting -------------------------------------------------------------------------------


def test_load_tools_takes_dotted_paths_and_callables_in_order():
    tools = load_tools(["tests.test_tools.sphinx_style", async_lookup, "mediastream.agents.builtin_tools.end_call"])
    assert [t.name for t in tools] == ["sphinx_style", "async_lookup", "end_call"]
    assert load_tools(None) == [] and load_tools([]) == []


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (["tests.test_tools.no_such_tool"], r'Could not import the tool .*no_such_tool.* MEDIASTREAM\["AGENT"\]\["OPTIONS"\]\["TOOLS"\]\[0\]'),
        (["tests.test_tools.sphinx_style", "tests.test_tools.sphinx_style"], "two tools called 'sphinx_style'"),
        ("tests.test_tools.sphinx_style", "must be a list"),
        ([42], r"\[0\] cannot be used: expected a dotted path"),
    ],
)
def test_load_errors_name_the_setting(entries, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        load_tools(entries)


# --- running tools -------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_sync_tool_runs_in_a_thread_with_converted_arguments_and_the_call_injected():
    box = box_of(order_pizza, thread_name)
    result = await run(box, "order_pizza", {"topping": "olives", "count": "2", "size": "small", "extras": ["basil"]})
    assert result.ok and result.error == "" and result.duration_ms >= 0
    assert json.loads(result.output) == {
        "topping": "olives",
        "count": 2,
        "size": "small",
        "crust": "thin",
        "price_limit": None,
        "extras": ["basil"],
        "delivery": False,
        "call_sid": CONTEXT.call_sid,
        "turn_id": 3,
    }
    assert result.value["count"] == 2
    ran_in = (await run(box, "thread_name")).value
    assert ran_in != threading.current_thread().name  # the event loop's thread was never blocked


@pytest.mark.asyncio
async def test_async_tools_are_awaited_and_context_only_tools_take_no_arguments():
    box = box_of(async_lookup, who_is_calling)
    assert (await run(box, "async_lookup", {"order_id": "A7"})).value == {"order_id": "A7", "status": "shipped"}
    result = await run(box, "who_is_calling")
    assert result.ok and json.loads(result.output) == CONTEXT.call_sid
    assert Tool.from_callable(who_is_calling).parameters["properties"] == {}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("name", "arguments", "raw", "error"),
    [
        ("order_pizza", {"topping": "ham"}, None, "bad arguments: missing required parameter(s) count"),
        ("order_pizza", {"topping": "ham", "count": 1, "colour": "red"}, None, "bad arguments: unknown parameter(s) colour"),
        ("order_pizza", {"topping": "ham", "count": "many"}, None, "bad arguments: count: must be an integer, got 'many'"),
        ("order_pizza", {"topping": "ham", "count": 1, "crust": "stuffed"}, None, "bad arguments: crust: must be one of ['thin', 'thick'], got 'stuffed'"),
        ("order_pizza", {}, '{"topping": "ham", "count": ', "bad arguments: the arguments are not valid JSON"),
        ("order_pizza", {}, "[1, 2]", "bad arguments: the arguments must be a JSON object"),
        ("order_pizzas", {}, None, "bad arguments: there is no tool called 'order_pizzas' (tools: order_pizza)"),
    ],
)
async def test_bad_arguments_are_an_error_the_model_reads(name, arguments, raw, error):
    result = await run(box_of(order_pizza), name, arguments, raw)
    assert not result.ok and result.error == error
    assert json.loads(result.output) == {"error": error} and result.value is None


@pytest.mark.asyncio
async def test_a_tools_exception_is_an_error_result_and_is_logged(caplog):
    box = box_of(broken, refuses)
    result = await run(box, "broken", {"value": "x"})
    assert not result.ok and result.error == "KeyError: 'the database row is gone'"
    assert "Tool broken failed on call CA1111" in caplog.text and "Traceback" in caplog.text
    caplog.clear()
    await run(box, "broken", {"value": "x"})
    assert caplog.text.count("Tool broken failed") == 1 and "Traceback" not in caplog.text  # repeats: one line
    caplog.clear()
    refused = await run(box, "refuses", {"value": "x"})
    assert refused.error == "that order cannot be changed any more"
    assert caplog.text == ""  # a ToolError is the tool's answer, not a bug


@pytest.mark.asyncio
async def test_a_slow_tool_times_out_and_the_next_call_still_runs():
    box = box_of(sleeps_forever, blocks_until_released, async_lookup, timeout=0.1)
    result = await run(box, "sleeps_forever")
    assert not result.ok and result.error == "the tool sleeps_forever timed out after 0.1 s"
    _release.clear()
    blocked = await run(box, "blocks_until_released")  # a sync tool: the answer does not wait for its thread
    assert blocked.error == "the tool blocks_until_released timed out after 0.1 s"
    _release.set()
    assert (await run(box, "async_lookup", {"order_id": "B2"})).ok


@pytest.mark.asyncio
async def test_a_cancelled_turn_cancels_the_tool():
    box = box_of(sleeps_forever, timeout=30)
    started = asyncio.Event()
    _sleeping.append(started)
    try:
        task = asyncio.create_task(run(box, "sleeps_forever"))
        await started.wait()
        task.cancel()  # the engine cancels a fenced-off turn: the tool stops, no result is made up
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        _sleeping.remove(started)


@pytest.mark.asyncio
async def test_client_tools_go_to_the_client_runner_or_say_none_is_connected():
    [tool] = load_tools([{"name": "show_map", "description": "Show a map.", "client": True}])
    offline = await ToolBox([tool]).run(ToolCall("c1", "show_map", {"zoom": 3}), CONTEXT)
    assert not offline.ok and offline.error == "show_map runs on the caller's screen, and no screen is connected"
    seen = []

    async def browser(call, context):
        seen.append((call.name, call.arguments, context.call_sid))
        return {"shown": True}

    online = await ToolBox([tool], client_runner=browser).run(ToolCall("c2", "show_map", {"zoom": 3}), CONTEXT)
    assert online.ok and online.value == {"shown": True}
    assert seen == [("show_map", {"zoom": 3}, CONTEXT.call_sid)]


# --- built-in tools ------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_end_call_returns_the_marker_the_engine_ends_the_call_on():
    box = ToolBox(load_tools(["mediastream.agents.builtin_tools.end_call"]))
    result = await run(box, "end_call")
    assert result.ok and json.loads(result.output) == {"end_call": True} and result.ends_call
    assert not (await run(box_of(async_lookup), "async_lookup", {"order_id": "1"})).ends_call


@pytest.mark.asyncio
async def test_transfer_call_only_goes_to_a_configured_label():
    box = ToolBox(load_tools(["mediastream.agents.builtin_tools.transfer_call"]))
    tool = box.tools["transfer_call"]
    assert tool.parameters["required"] == ["to"] and tool.context_parameter == "context"
    result = await run(box, "transfer_call", {"to": "+19005550000"})
    assert result.error == "unknown transfer target '+19005550000' (targets: none are configured)"
    with mediastream_settings(AGENT_TRANSFER_TARGETS={"sales": "+14155550100", "support": "sip:desk@pbx.example.com"}):
        result = await run(box, "transfer_call", {"to": "billing"})
    assert result.error == "unknown transfer target 'billing' (targets: sales, support)"


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_transfer_call_and_voicemail_go_through_call_control():
    from voicecall import control
    from tests.control_support import FROM, TO, fake_twilio

    box = ToolBox(load_tools([builtin_tools.transfer_call, builtin_tools.send_to_voicemail]))
    with fake_twilio() as fake, mediastream_settings(AGENT_TRANSFER_TARGETS={"sales": "+14155550100"}):
        call = await control.aplace_call(TO, FROM)
        fake.calls[call.call_sid].status = "in-progress"  # answered
        context = CallContext(call.call_sid, "MZ1", 1)
        result = await box.run(ToolCall("c1", "transfer_call", {"to": "sales"}), context)
        assert result.ok and result.value == {"transferred": True, "to": "sales"}
        [update] = fake.requests_to(f"/Calls/{call.call_sid}.json")
        assert "<Dial><Number>+14155550100</Number></Dial>" in update.form["Twiml"][0]
        voicemail = await box.run(ToolCall("c2", "send_to_voicemail", {}), context)
        assert voicemail.ok and voicemail.value == {"voicemail": True}
        assert len(fake.requests_to(f"/Calls/{call.call_sid}.json")) == 2
