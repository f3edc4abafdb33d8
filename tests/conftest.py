import multiprocessing

import pytest

from tests.live import STARTED, DaphneFactory, Live, server_database_url

# A forked daphne child inherits asgiref's executor without its thread and
# hangs; child processes are spawned instead.
multiprocessing.set_start_method("spawn", force=True)

_FIRST_SERVER = pytest.StashKey[int]()


@pytest.fixture(autouse=True)
def _fresh_channel_layers():
    """Each test gets new channel layers (no messages leak between tests)."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup):
    """pytest-django's database setup, plus: close the connection asgiref's sync
    thread opened for database_sync_to_async before the test database is dropped."""
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=30)


@pytest.fixture(scope="session")
def daphne(django_db_setup, tmp_path_factory) -> DaphneFactory:
    """Real daphne processes on the test database and Redis.

    ``with daphne.start(overrides) as live`` (in a fixture or sync code) or
    ``async with daphne.astart(overrides) as live`` (in an async test) runs one
    with those MEDIASTREAM overrides; ``live`` is a :class:`tests.live.Live`.
    """
    from tests.settings import TEST_REDIS_URL

    return DaphneFactory(
        database_url=server_database_url(), redis_url=TEST_REDIS_URL, log_dir=tmp_path_factory.mktemp("daphne")
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item.stash[_FIRST_SERVER] = len(STARTED)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test's report ends with the log tail of every daphne it used."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    servers = [value for value in getattr(item, "funcargs", {}).values() if isinstance(value, Live)]
    servers += [live for live in STARTED[item.stash.get(_FIRST_SERVER, len(STARTED)) :] if live not in servers]
    for live in servers:
        report.sections.append((f"{live.name} log tail (port {live.port}, {live.log})", live.log_tail()))
