"""The browser talk relay: a browser talks to an agent's voice through the server.

A staff user's browser opens the WebSocket at :data:`RELAY_PATH`, creates a
relay session and streams its microphone to it as PCM16 24 kHz; the session
answers with the agent's speech in the same format, transcripts and tool
calls (protocol: :mod:`.protocol`). API keys stay on the server. The voice
behind a session is ``MEDIASTREAM["AGENT"]`` (or the embedded demo agent):
a speech agent hears and speaks directly (:mod:`.speech`), a text agent
through the embedded speech-to-text and text-to-speech (:mod:`.cascade`).

Modules: ``protocol`` (frames, pure), ``limits`` (settings and the session
table, pure), ``relay`` (one session: events, tools, expiry), ``voice``
(which voice), ``speech`` / ``cascade`` (the two voices), ``pcm``
(the browser's audio format), ``clienttools`` (tools answered by the browser),
``consumer`` (the WebSocket, I/O only), ``views`` / ``urls`` (the admin page),
``checks`` (the ``TALK`` settings).
"""

#: The WebSocket path of the relay (``mediastream.routing`` routes it).
RELAY_PATH = "/talk/relay/"
