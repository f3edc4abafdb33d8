import multiprocessing

import pytest

# A forked daphne child inherits asgiref's executor without its thread and hangs
# (see channels-daphne-facts.md, Q6); child processes are spawned instead.
multiprocessing.set_start_method("spawn", force=True)


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
