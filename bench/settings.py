"""Settings for the daphne process the benchmarks start, and for the bench processes themselves.

The end-to-end test settings (real PostgreSQL from ``DATABASE_URL``, Redis
channel layer from ``REDIS_URL`` with prefix ``CHANNEL_LAYER_PREFIX``, app
overrides from ``MEDIASTREAM_OVERRIDES`` JSON), with the bench ASGI app
(``bench.asgi:application``: the bench consumer plus a small stats endpoint)
and the bench's own Twilio token and public origin (``bench.common``), which
its simulated callers sign with.
"""

from bench.common import AUTH_TOKEN, PUBLIC_BASE_URL
from tests.settings_live import *  # noqa: F403

ASGI_APPLICATION = "bench.asgi.application"
TWILIO_AUTH_TOKEN = AUTH_TOKEN
TWILIO_PUBLIC_BASE_URL = PUBLIC_BASE_URL
# Simulated callers sign from accounts of their own: accept any account.
TWILIO_ACCOUNT_SID = ""
