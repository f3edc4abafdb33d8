"""The live call console: a call's admin page that follows the call as it happens and acts on it.

A staff member's browser opens a WebSocket (:mod:`.routing`, wrapped in
Channels' session auth and an origin check) to :class:`.consumer.CallConsole`.
The consumer subscribes to the call's events group, sends a snapshot of the
call's records first (so a reconnect catches up from the event log), then
every live event; the controls (say, interrupt, hang up, transfer) go through
the public APIs (``mediastream.api``, ``voicecall.control``), so they reach
the call in whichever process holds it. The page itself is a panel on
voicecall's call admin (:mod:`.admin`), its script a static file
(``mediastream/console/console.js``).

Modules: ``access`` (who may watch and act), ``conf`` (settings), ``wire``
(the socket's JSON messages), ``records`` (the snapshot and the records
poll), ``overlap`` (the snapshot/live-event overlap), ``actions`` (what each
control does), ``consumer``, ``routing``, ``admin``.
"""
