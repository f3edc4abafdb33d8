"""Settings for the daphne process the benchmarks start, and for the bench processes themselves.

The end-to-end test settings (real PostgreSQL from ``DATABASE_URL``, Redis
channel layer from ``REDIS_URL`` with prefix ``CHANNEL_LAYER_PREFIX``, app
overrides from ``MEDIASTREAM_OVERRIDES`` JSON), with the bench ASGI app
(``bench.asgi:application``: the bench consumer plus a small stats endpoint).
"""

from tests.settings_live import *  # noqa: F403

ASGI_APPLICATION = "bench.asgi.application"
