"""Which agent answers a call: the call's own config, then AGENT_SELECTOR, then MEDIASTREAM["AGENT"]."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from mediastream.agents import selection
from mediastream.agents.scripted import ScriptedAgent
from mediastream.agents.selection import aagent_for_call, agent_for_call, build_agent
from mediastream.backends import InvalidBackendError, backends
from tests.support import mediastream_settings
from voicecall.models import Call

SCRIPTED = "mediastream.agents.scripted.ScriptedAgent"
DEFAULT = {"BACKEND": SCRIPTED, "OPTIONS": {"GREETING": "Default line."}}
SALES = {"BACKEND": SCRIPTED, "OPTIONS": {"GREETING": "Sales."}}
SUPPORT = {"BACKEND": SCRIPTED, "OPTIONS": {"GREETING": "Support."}}
#: A config module attribute a dotted path may name.
SUPPORT_CONFIG = SUPPORT


class ClosingAgent(ScriptedAgent):
    """Counts its closes (per-call agents are closed when dropped)."""

    def __init__(self, **options):
        super().__init__(**options)
        self.closes = 0

    def close(self):
        self.closes += 1


def by_dialled_number(call):
    return {"+15550001": SALES, "+15550002": SUPPORT}.get(call.to_number)


async def async_by_dialled_number(call):
    return by_dialled_number(call)


def call(to="+15550009", agent=None) -> Call:
    return Call(call_sid="CA" + "4" * 32, to_number=to, agent=agent)


@pytest.fixture(autouse=True)
def fresh_cache():
    selection.close_cached_agents()
    yield
    selection.close_cached_agents()


def test_no_agent_anywhere_means_none():
    assert agent_for_call(call()) is None


def test_the_setting_is_the_default_and_shared_with_backends_agent():
    with mediastream_settings(AGENT=DEFAULT):
        agent = agent_for_call(call())
        assert agent is backends.agent and agent.greeting == "Default line."
        assert build_agent(dict(DEFAULT)) is agent  # the same config is the same agent


def test_the_selector_chooses_per_dialled_number_and_each_config_is_built_once():
    with mediastream_settings(AGENT=DEFAULT, AGENT_SELECTOR="tests.test_agent_selection.by_dialled_number"):
        sales = agent_for_call(call("+15550001"))
        assert sales.greeting == "Sales." and agent_for_call(call("+15550001")) is sales
        assert agent_for_call(call("+15550002")).greeting == "Support."
        assert agent_for_call(call("+15550009")) is backends.agent  # the selector said None


def test_the_calls_own_agent_comes_first():
    with mediastream_settings(AGENT=DEFAULT, AGENT_SELECTOR="tests.test_agent_selection.by_dialled_number"):
        assert agent_for_call(call("+15550001", agent=SUPPORT)).greeting == "Support."
        assert agent_for_call(call(agent="tests.test_agent_selection.SUPPORT_CONFIG")).greeting == "Support."
        by_class = agent_for_call(call(agent=SCRIPTED))
        assert type(by_class) is ScriptedAgent and by_class.greeting == ""


@pytest.mark.asyncio
async def test_async_code_awaits_an_async_selector_and_runs_a_sync_one_in_a_thread():
    with mediastream_settings(AGENT_SELECTOR="tests.test_agent_selection.async_by_dialled_number"):
        assert (await aagent_for_call(call("+15550001"))).greeting == "Sales."
        with pytest.raises(ImproperlyConfigured, match="coroutine function: call aagent_for_call"):
            agent_for_call(call("+15550001"))
    with mediastream_settings(AGENT_SELECTOR="tests.test_agent_selection.by_dialled_number"):
        assert (await aagent_for_call(call("+15550002"))).greeting == "Support."


@pytest.mark.parametrize(
    ("settings", "own", "error", "message"),
    [
        ({"AGENT_SELECTOR": "tests.nope.select"}, None, ImproperlyConfigured, r'Could not import MEDIASTREAM\["AGENT_SELECTOR"\]'),
        ({}, {"OPTIONS": {}}, InvalidBackendError, r"the agent config of call CA4444.*must be a dict with a \"BACKEND\""),
        ({}, {"BACKEND": "tests.nope.Agent"}, InvalidBackendError, "the agent config of call CA4444.*Could not import"),
        ({}, {"BACKEND": "mediastream.tts.dummy.SilenceBackend"}, InvalidBackendError, "not a subclass of mediastream.agents.base.AgentBackend"),
        ({}, {"BACKEND": SCRIPTED, "OPTIONS": {"COLOUR": "red"}}, InvalidBackendError, "Bad OPTIONS"),
        ({}, "tests.test_agent_selection.by_dialled_number", InvalidBackendError, "neither an agent class nor a config dict"),
    ],
)
def test_bad_configs_say_where_they_came_from(settings, own, error, message):
    with mediastream_settings(**settings):
        with pytest.raises(error, match=message):
            agent_for_call(call(agent=own))


def test_cached_agents_are_closed_on_a_settings_change_and_past_the_cap(monkeypatch):
    closing = {"BACKEND": "tests.test_agent_selection.ClosingAgent", "OPTIONS": {}}
    first = build_agent(closing)
    assert build_agent(closing) is first
    with mediastream_settings(AGENT=DEFAULT):  # MEDIASTREAM changed: per-call agents are dropped
        assert first.closes == 1
        second = build_agent(closing)
        assert second is not first
    monkeypatch.setattr(selection, "MAX_CACHED_AGENTS", 2)
    selection.close_cached_agents()
    oldest = build_agent({**closing, "OPTIONS": {"GREETING": "1"}})
    middle = build_agent({**closing, "OPTIONS": {"GREETING": "2"}})
    build_agent({**closing, "OPTIONS": {"GREETING": "1"}})  # used again: now the most recent
    build_agent({**closing, "OPTIONS": {"GREETING": "3"}})
    assert (oldest.closes, middle.closes) == (0, 1)  # "2" was the least recently used
    assert build_agent({**closing, "OPTIONS": {"GREETING": "1"}}) is oldest
