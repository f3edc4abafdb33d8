"""Settings for child processes of the call-control tests (commands, pacing workers).

The parent passes the test database (DATABASE_URL), the fake Twilio's origin
and the pacing rate through the environment.
"""

import os

from tests.settings import *  # noqa: F401,F403

TWILIO_API_BASE_URL = os.environ.get("TWILIO_API_BASE_URL", "https://api.twilio.com")
TWILIO_CALLS_PER_SECOND = float(os.environ.get("TWILIO_CALLS_PER_SECOND", "1"))
if "TWILIO_AUTH_TOKEN_OVERRIDE" in os.environ:
    TWILIO_AUTH_TOKEN = os.environ["TWILIO_AUTH_TOKEN_OVERRIDE"]
