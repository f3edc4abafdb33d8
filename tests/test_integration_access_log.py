"""daphne's access log keeps query strings (tokens, secrets) out.

daphne writes each HTTP request's raw URI to its access log (stdout by
default, the log that gets kept and shipped); ``mediastream.asgi`` installs
``mediastream.daphne_access`` so entries keep the path and ``?...`` only.
Against a real daphne serving the project as documented, and through the
server method both daphne's CLI and ``manage.py runserver`` log through.
"""

from __future__ import annotations

import httpx
import pytest

from mediastream.daphne_access import install, redact_path

SECRET = "s3cr3t-value-in-query"


def test_redact_path_keeps_the_path_and_marks_the_query():
    assert redact_path("/twilio/voice/?token=abc&x=1") == "/twilio/voice/?..."
    assert redact_path("/twilio/voice/") == "/twilio/voice/"
    assert redact_path("/a\x1b[31m/b\nforged") == "/a [31m/b forged"
    assert redact_path(None) == ""


def test_every_access_log_entry_passes_through_the_redaction():
    from daphne.server import Server

    assert install() and install()  # idempotent
    seen = []
    endpoints = ["tcp:port=0:interface=127.0.0.1"]
    server = Server(application=None, endpoints=endpoints, action_logger=lambda *entry: seen.append(entry))
    server.log_action("http", "complete", {"path": f"/twilio/status/?AccountSid={SECRET}", "status": 200})
    server.log_action("websocket", "connecting", {"path": "/twilio/media-stream/", "client": "127.0.0.1:1"})
    assert [details["path"] for _, _, details in seen] == ["/twilio/status/?...", "/twilio/media-stream/"]
    assert SECRET not in repr(seen)


@pytest.mark.django_db(transaction=True)
def test_daphne_access_log_has_no_query_strings(daphne):
    with daphne.start(name="access-log") as live:
        responses = [
            httpx.post(f"{live.http}/twilio/voice/?key={SECRET}", data={"CallSid": "CA" + "1" * 32}),
            httpx.get(f"{live.http}/twilio/status/?token={SECRET}"),
        ]
    assert [r.status_code for r in responses] == [403, 405]
    log = live.log.read_text(errors="replace")
    assert '"POST /twilio/voice/?..." 403' in log and '"GET /twilio/status/?..." 405' in log
    assert SECRET not in log
