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
buffer, on an open connection, within autobahn's size limits, is unmasked
(websockets' C helper), decoded as strict UTF-8 (the same check autobahn's
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

An application that reads this connection can also take its text frames
without the queue: :func:`deliver_directly` gives daphne's queue an ``offer``
callable, which the fast path calls with the frame's text while the queue is
empty; when ``offer`` returns False (it is busy) the ``websocket.receive``
message is queued as usual.
"""

from __future__ import annotations

import asyncio
import errno
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["deliver_directly", "install"]

_TEXT_FIN = 0x81  # FIN, no RSV bits, opcode 1 (text)
#: The attribute of daphne's per-connection queue that holds the application's offer.
_OFFER = "mediastream_offer"
_installed = False


def deliver_directly(receive: Callable[[], Any], offer: Callable[[str], bool]) -> Callable[[], None]:
    """Hand this connection's text frames (their text) to ``offer`` when the queue is empty; returns the undo.

    ``receive`` is what the server gave the application: under daphne with the
    fast path installed it is the connection's ``asyncio.Queue.get``; anything
    else (another server, a wrapped receive) is left alone.
    """
    queue = getattr(receive, "__self__", None)
    if not _installed or not isinstance(queue, asyncio.Queue):
        return lambda: None
    setattr(queue, _OFFER, offer)
    return lambda: queue.__dict__.pop(_OFFER, None)


def install() -> bool:
    """Patch daphne's WebSocket protocol once; True if it is (now) patched."""
    try:
        from autobahn.websocket.protocol import WebSocketProtocol as Autobahn
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:
        return False
    global _installed
    original = WebSocketProtocol.processData
    if getattr(original, "_mediastream_patched", False):
        return True
    STATE_OPEN = Autobahn.STATE_OPEN
    unmask = _unmasker()
    now = time.time

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
        payload = unmask(data[start:end], data[start - 4 : start]) if length else b""
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
            self.last_ping = now()
            queue = self.application_queue
            offer = queue.__dict__.get(_OFFER)
            if offer is None or not queue.empty() or not offer(text):
                queue.put_nowait({"type": "websocket.receive", "text": text})
        return len(self.data) > 0

    processData._mediastream_patched = True
    WebSocketProtocol.processData = processData
    _installed = True
    _install_send(WebSocketProtocol, Autobahn)
    _install_data_received(WebSocketProtocol)
    _install_direct_reads(WebSocketProtocol, Autobahn)
    _install_quiet_handshake_log(WebSocketProtocol)
    return True


def _socket_writer() -> Callable[[Any, bytes], None]:
    """``transport.write``, but straight to the socket when nothing is waiting to be sent.

    Twisted buffers every write and sends it on the next loop turn, registering
    the socket for writability and unregistering it after (two ``epoll_ctl``
    calls and a callback per message). A plain TCP connection with an empty
    buffer takes the frame in one ``send``; what the kernel does not take, and
    anything on another transport (TLS) or a connection with data pending, is
    written the usual way, after what is pending, so the order never changes.
    """
    try:
        from twisted.internet.tcp import Server
    except ImportError:
        return lambda transport, data: transport.write(data)

    def write_now(transport: Any, data: bytes) -> None:
        if (
            type(transport) is Server
            and transport.connected
            and not transport.disconnecting
            and not transport._writeDisconnected
            and not transport._tempDataBuffer
            and len(transport.dataBuffer) == transport.offset
        ):
            sent = transport.writeSomeData(data)
            if type(sent) is int and sent > 0:
                if sent < len(data):
                    transport.write(data[sent:])
                return
        transport.write(data)  # buffered, or an error that Twisted reports on its next write attempt

    return write_now


def _unmasker() -> Callable[[bytes, bytes], bytes]:
    """XOR a payload with its 4-byte mask: websockets' C helper (a dependency), else :func:`_xor_unmask`."""
    try:
        from websockets.speedups import apply_mask
    except ImportError:  # websockets installed without its C extension
        return _xor_unmask
    return apply_mask


def _xor_unmask(payload: bytes, mask: bytes) -> bytes:
    """The mask repeated over the payload, applied with one big-integer XOR."""
    length = len(payload)
    key = (mask * ((length >> 2) + 1))[:length]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(length, "little")


def _install_direct_reads(WebSocketProtocol, Autobahn) -> None:
    """Let asyncio call the read handler of a client connection without Twisted's log context.

    Twisted's asyncio reactor registers every reader through ``callWithLogger``,
    which sets a ``system`` context for Twisted's own legacy log on each read (a
    context dict, two tracker calls and a log-prefix lookup per frame). daphne logs
    through Python's logging. On an open WebSocket connection the read is also
    done here in one step: the ``recv``, then the frames taken from the buffer as
    autobahn's ``consumeData`` takes them (the fast path or autobahn's parser),
    without the five calls between the reactor and the frame parser. A closed
    socket, an error, a connection in any other state, or octet or debug
    logging go through Twisted's handler as before, which drops a connection
    whose read failed.
    """
    try:
        from twisted.internet import main, tcp
        from twisted.internet.asyncioreactor import AsyncioSelectorReactor
        from txaio.tx import _no_op
    except ImportError:
        return
    original = AsyncioSelectorReactor.addReader
    if getattr(original, "_mediastream_patched", False):
        return
    STATE_OPEN, STATE_CLOSED = Autobahn.STATE_OPEN, Autobahn.STATE_CLOSED
    would_block = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)

    def addReader(self, reader) -> None:
        original(self, reader)
        fd = self._readers.get(reader)
        if fd is not None and type(reader) is tcp.Server:  # an accepted connection that asyncio watches
            self._asyncioEventloop.add_reader(fd, _read, self, reader)

    def _read(reactor, reader) -> None:
        protocol = reader.protocol
        if (
            type(protocol) is not WebSocketProtocol
            or protocol.state != STATE_OPEN
            or protocol.logOctets
            or protocol.log.debug is not _no_op
            or not reader.connected
        ):
            return _read_through_twisted(reactor, reader)
        try:
            data = reader.socket.recv(reader.bufferSize)
        except OSError as exc:
            if exc.errno not in would_block:
                reactor._disconnectSelectable(reader, main.CONNECTION_LOST, True)
            return
        if not data:
            reactor._disconnectSelectable(reader, main.CONNECTION_DONE, True)
            return
        try:
            protocol.trafficStats.incomingOctetsWireLevel += len(data)
            protocol.data += data
            while protocol.processData() and protocol.state != STATE_CLOSED:
                pass
        except Exception as exc:  # as Twisted's handler does with a protocol's exception
            reactor._log.failure(None)
            reactor._disconnectSelectable(reader, exc, True)
        except BaseException:
            _log_failure(reactor, reader)

    def _read_through_twisted(reactor, reader) -> None:
        try:
            reactor._readOrWrite(reader, True)
        except BaseException:
            _log_failure(reactor, reader)

    def _log_failure(reactor, reader) -> None:
        # callWithLogger's catch-all: _readOrWrite handles an Exception; anything else
        # (SystemExit, ...) is logged, as Twisted would; KeyboardInterrupt goes on.
        if isinstance(sys.exc_info()[1], KeyboardInterrupt):
            raise
        reactor._log.failure("Unhandled error reading {reader!r}", reader=reader)

    addReader._mediastream_patched = True
    AsyncioSelectorReactor.addReader = addReader


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


def _install_quiet_handshake_log(WebSocketProtocol) -> None:
    """Skip the debug text autobahn builds for every new connection when debug logging is off.

    Its ``_connectionMade`` pretty-prints the connection's thirty options
    (``pprint.pformat``) as the argument of a ``log.debug`` that txaio then
    drops: about half a millisecond of each handshake, on the event loop. The
    module's ``pformat`` now returns "" while daphne's protocol logs no debug;
    with debug on it is the real one. autobahn's other use of it,
    ``Timings.__str__`` (not a log argument), keeps the real one.
    """
    import pprint

    from autobahn.websocket import protocol as autobahn_protocol
    from txaio.tx import _no_op

    if getattr(autobahn_protocol.pformat, "_mediastream_patched", False):
        return
    real = pprint.pformat

    def pformat(obj, *args, **kwargs) -> str:
        if WebSocketProtocol.log.debug is _no_op:
            return ""
        return real(obj, *args, **kwargs)

    pformat._mediastream_patched = True
    autobahn_protocol.pformat = pformat
    autobahn_protocol.Timings.__str__ = lambda self: real(self._timings)


def _install_send(WebSocketProtocol, Autobahn) -> None:
    """The same for what the app sends: one unfragmented text frame, written as autobahn's sendFrame would."""
    original = WebSocketProtocol.serverSend
    STATE_OPEN, GROUND = Autobahn.STATE_OPEN, Autobahn.SEND_STATE_GROUND
    write_now = _socket_writer()

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
        write_now(self.transport, frame)
        stats.outgoingOctetsWireLevel += len(frame)

    serverSend._mediastream_patched = True
    WebSocketProtocol.serverSend = serverSend
