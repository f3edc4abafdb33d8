"""Who may scrape /metrics behind a proxy, and what ``manage.py check`` says about the metrics settings.

In-process (Django's test client through the demo project's URLs); the
real server's side of the same rule is in tests/test_metrics.py.
"""

from __future__ import annotations

import pytest
from django.test import Client

from mediastream.checks import check_settings

from .support import mediastream_settings


def _status(remote_addr: str, forwarded_for: str | None = None, **headers: str) -> int:
    extra = {"REMOTE_ADDR": remote_addr, **headers}
    if forwarded_for is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded_for
    return Client().get("/metrics", **extra).status_code


def test_loopback_only_by_default():
    assert _status("127.0.0.1") == 200
    assert _status("::1") == 200
    assert _status("203.0.113.9") == 403


def test_behind_a_trusted_proxy_the_forwarded_client_is_checked():
    with mediastream_settings(TRUSTED_PROXIES=["10.0.0.2"], METRICS_ALLOWED_NETWORKS=["192.0.2.0/24"]):
        assert _status("10.0.0.2", "192.0.2.44") == 200  # the proxy forwards an allowed client
        assert _status("10.0.0.2", "198.51.100.7") == 403
        # An untrusted peer's header is ignored: it is judged by its own address.
        assert _status("198.51.100.7", "192.0.2.44") == 403


def test_a_bad_network_entry_allows_nothing_and_check_names_it():
    with mediastream_settings(METRICS_ALLOWED_NETWORKS=["127.0.0.1/33", "::1/128"]):
        assert _status("127.0.0.1") == 403
        assert _status("::1") == 200
        assert [e.id for e in check_settings()] == ["mediastream.E040"]
    with mediastream_settings(METRICS_ALLOWED_NETWORKS="127.0.0.1"):
        assert [e.id for e in check_settings()] == ["mediastream.E040"]


def test_a_multiprocess_dir_that_is_not_a_directory_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    assert [e.id for e in check_settings()] == ["mediastream.E042"]
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert check_settings() == []


@pytest.mark.parametrize("token", [None, 1234])
def test_the_token_setting_must_be_a_string(token):
    with mediastream_settings(METRICS_BEARER_TOKEN=token):
        assert [e.id for e in check_settings()] == ["mediastream.E041"]
