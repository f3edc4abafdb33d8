"""A fast path through daphne for the frame Twilio sends 50 times a second per call.

daphne reads WebSocket frames with autobahn, whose frame parser is pure Python:
for each message it builds a frame header, a C masker through cffi, a UTF-8
validator pass, a chain of ``onFrame*`` / ``onMessage*`` callbacks and a Twisted
Deferred for a "message" event nobody listens to, before daphne's
``onMessage`` decodes the payload again and queues it for the application.
Profiled at 100 Twilio streams that was about two thirds of the process's CPU
(``bench/README.md``, "CPU per inbound frame").

:func:`install` wraps ``daphne.ws_protocol.WebSocketProtocol.processData`` so
that a complete, masked, unfragmented, uncompressed text frame already in the
buffer, on an open connection, within autobahn's size limits, is unmasked with
one big-integer XOR, decoded as strict UTF-8 (the same check autobahn's
validator makes: overlong forms, surrogates and code points past U+10FFFF are
refused) and put on the application's queue as daphne's ``onMessage`` would.
Everything else (control frames, binary or fragmented messages, invalid UTF-8,
oversize frames, a connection that is closing, frame logging or timing turned
on) goes through autobahn unchanged, which answers as it always has (1007 for
invalid UTF-8, 1009 for too big, 1002 for protocol errors).
What the application sends (``websocket.send`` with text: Twilio's media,
marks, clears) is framed the same direct way when autobahn would have sent it
as one frame straight to the socket.
``mediastream.asgi`` calls it; it changes nothing when daphne is not installed.
"""

from __future__ import annotations

import time

__all__ = ["install"]

_TEXT_FIN = 0x81  # FIN, no RSV bits, opcode 1 (text)


def install() -> bool:
    """Patch daphne's WebSocket protocol once; True if it is (now) patched."""
    try:
        from autobahn.websocket.protocol import WebSocketProtocol as Autobahn
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:
        return False
    original = WebSocketProtocol.processData
    if getattr(original, "_mediastream_patched", False):
        return True
    STATE_OPEN = Autobahn.STATE_OPEN
    from_bytes = int.from_bytes

    def processData(self) -> bool:
        data = self.data
        if (
            len(data) < 8
            or data[0] != _TEXT_FIN
            or self.current_frame is not None
            or self.inside_message
            or self.state != STATE_OPEN
            or self._perMessageCompress is not None
            or self.logFrames
            or self.trackedTimings
            or self._listeners
            or not self.applyMask
        ):
            return original(self)
        length = data[1]
        if length < 0xFE:  # masked, payload length < 126 (0xFE = mask bit + 126)
            if length < 0x80:  # not masked: autobahn refuses it
                return original(self)
            length -= 0x80
            start = 6
        elif length == 0xFE:  # masked, 16-bit extended length
            length = (data[2] << 8) | data[3]
            if length < 126:  # not the minimal encoding: autobahn refuses it
                return original(self)
            start = 8
        else:  # 64-bit length: beyond any limit daphne sets here
            return original(self)
        end = start + length
        if (
            len(data) < end
            or 0 < self.maxFramePayloadSize < length
            or 0 < self.maxMessagePayloadSize < length
        ):
            return original(self)  # not all here yet, or too big: autobahn waits or refuses
        mask = data[start - 4 : start]
        if length:
            key = (mask * ((length >> 2) + 1))[:length]
            payload = (from_bytes(data[start:end], "little") ^ from_bytes(key, "little")).to_bytes(length, "little")
        else:
            payload = b""
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            return original(self)  # autobahn fails the connection with 1007
        self.data = data[end:]
        stats = self.trafficStats
        stats.incomingOctetsWebSocketLevel += length
        stats.incomingOctetsAppLevel += length
        stats.incomingWebSocketFrames += 1
        stats.incomingWebSocketMessages += 1
        if self.autoPingTimeoutCall and self.autoPingRestartOnAnyTraffic:
            self._cancelAutoPingTimeoutCall()
        # daphne's onMessage, without decoding the payload a second time.
        if not self.muted:
            self.last_ping = time.time()
            self.application_queue.put_nowait({"type": "websocket.receive", "text": text})
        return len(self.data) > 0

    processData._mediastream_patched = True
    WebSocketProtocol.processData = processData
    _install_send(WebSocketProtocol, Autobahn)
    _install_data_received(WebSocketProtocol)
    return True


def _install_data_received(WebSocketProtocol) -> None:
    """Skip autobahn's debug line per TCP read when debug logging is off.

    autobahn's ``dataReceived`` builds its arguments (``hltype`` inspects the
    method and styles it with click) before txaio's disabled ``debug`` drops
    them: about 6 % of daphne's samples at 100 streams. With debug on, the
    original runs.
    """
    from txaio.tx import _no_op

    original = WebSocketProtocol.dataReceived

    def dataReceived(self, data: bytes) -> None:
        if self.log.debug is _no_op:
            self._dataReceived(data)
        else:
            original(self, data)

    dataReceived._mediastream_patched = True
    WebSocketProtocol.dataReceived = dataReceived


def _install_send(WebSocketProtocol, Autobahn) -> None:
    """The same for what the app sends: one unfragmented text frame, written as autobahn's sendFrame would."""
    original = WebSocketProtocol.serverSend
    STATE_OPEN, GROUND = Autobahn.STATE_OPEN, Autobahn.SEND_STATE_GROUND

    def serverSend(self, content, binary=False):
        if (
            binary
            or self.state != STATE_OPEN
            or self.send_state != GROUND
            or self.send_queue
            or self._perMessageCompress is not None
            or self.maskServerFrames
            or self.autoFragmentSize
            or self.logFrames
            or self.logOctets
            or self.trackedTimings
        ):
            return original(self, content, binary)
        payload = content.encode("utf-8")
        length = len(payload)
        if length >= 0x10000 or 0 < self.maxMessagePayloadSize < length:
            return original(self, content, binary)
        if length < 126:
            frame = bytes((_TEXT_FIN, length)) + payload
        else:
            frame = bytes((_TEXT_FIN, 126, length >> 8, length & 0xFF)) + payload
        stats = self.trafficStats
        stats.outgoingWebSocketMessages += 1
        stats.outgoingOctetsAppLevel += length
        stats.outgoingOctetsWebSocketLevel += length
        stats.outgoingWebSocketFrames += 1
        self.transport.write(frame)
        stats.outgoingOctetsWireLevel += len(frame)

    serverSend._mediastream_patched = True
    WebSocketProtocol.serverSend = serverSend
