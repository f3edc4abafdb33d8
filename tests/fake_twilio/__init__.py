"""A local fake of Twilio: its REST API for calls and recordings, and its side of the calls it creates.

``FakeTwilio`` (tests/fake_twilio/server.py) checks what Twilio checks
(the account SID in the path, HTTP basic auth, the form fields and their
documented values), answers with Twilio-shaped JSON and Twilio-shaped errors,
and, given a ``webhook_origin``, plays the calls it created: signed status
callbacks, the signed voice webhook, the media stream its TwiML asks for
(mediastream.simulator), answering-machine detection and recording callbacks.
"""

from .server import ApiRequest, Callback, FakeCall, FakeTwilio, TwilioApiError

__all__ = ["ApiRequest", "Callback", "FakeCall", "FakeTwilio", "TwilioApiError"]
