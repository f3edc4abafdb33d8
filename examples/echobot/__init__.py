"""A worked example: a bot that greets the caller and repeats what it heard.

Everything it does goes through public API: Django signals for what the caller
did, and ``mediastream.api.aspeak`` to answer. Add ``"examples.echobot"`` to
INSTALLED_APPS (``bin/run`` does) and call the server.
"""
