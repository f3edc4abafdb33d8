"""Settings for the daphne child process in end-to-end tests: real Redis, test database.

The parent test passes DATABASE_URL (its test database), REDIS_URL and a
channel-layer prefix, plus optional backend overrides, through the environment.
"""

import json
import os

_REDIS_URL = os.environ["REDIS_URL"]  # read first: tests.settings clears it for in-process tests

from tests.settings import *  # noqa: F401,F403
from tests.settings import MEDIASTREAM as _TEST_MEDIASTREAM

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [{"address": _REDIS_URL, "socket_timeout": None, "max_connections": 1000}],
            "prefix": os.environ.get("CHANNEL_LAYER_PREFIX", "asgi"),
            "group_expiry": 86400,
        },
    }
}

MEDIASTREAM = {**_TEST_MEDIASTREAM, **json.loads(os.environ.get("MEDIASTREAM_OVERRIDES", "{}"))}
