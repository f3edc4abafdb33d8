"""The speech pool's framed protocol over a Unix stream socket (no Django, no I/O).

Every frame is a 9-byte header ``>cII`` (kind, request id, payload length) and
the payload. A request's payload is a JSON header, then raw bytes::

    >I json length | json | bytes

Client → pool: ``T`` transcribe (json ``{}``, bytes: 8 kHz mu-law of one
utterance), ``S`` synthesize (json ``{"text": ..., "length_scale": ...}``),
``C`` cancel request ``id`` (no payload), ``Q`` stats (id 0 answers it).
Pool → client: ``H`` hello once on connect (id 0, json ``{"stt": {"model": ...}
| null, "tts": {"sample_rate": ...} | null, "pid": ...}``), ``F`` a transcript
(json ``{"text": ...}``), ``A`` PCM16 LE audio of a synthesis, ``E`` its end,
``X`` the request failed (json ``{"message": ...}``), ``Q`` stats (json).
Requests of one connection run concurrently; a cancel stops its request
(a queued transcription never starts, a synthesis stops at the next sentence).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

__all__ = ["Frame", "HEADER", "MAX_PAYLOAD", "pack", "pack_request", "split_request"]

HEADER = struct.Struct(">cII")
_JSON_LENGTH = struct.Struct(">I")
#: Larger frames are a protocol error (an utterance is at most 30 s: 240 KB of mu-law).
MAX_PAYLOAD = 16 * 1024 * 1024

TRANSCRIBE, SYNTHESIZE, CANCEL, STATS = b"T", b"S", b"C", b"Q"
HELLO, FINAL, AUDIO, END, ERROR = b"H", b"F", b"A", b"E", b"X"


@dataclass(frozen=True, slots=True)
class Frame:
    kind: bytes
    request_id: int
    payload: bytes = b""

    def json(self) -> Any:
        return json.loads(self.payload) if self.payload else {}


def pack(kind: bytes, request_id: int, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"speech pool frame of {len(payload)} bytes is over {MAX_PAYLOAD}")
    return HEADER.pack(kind, request_id, len(payload)) + payload


def pack_json(kind: bytes, request_id: int, body: Any) -> bytes:
    return pack(kind, request_id, json.dumps(body).encode())


def pack_request(kind: bytes, request_id: int, body: dict, data: bytes = b"") -> bytes:
    header = json.dumps(body).encode()
    return pack(kind, request_id, _JSON_LENGTH.pack(len(header)) + header + data)


def split_request(payload: bytes) -> tuple[dict, bytes]:
    """A request payload's JSON header and raw bytes (ValueError when malformed)."""
    if len(payload) < _JSON_LENGTH.size:
        raise ValueError("request payload shorter than its JSON length")
    (length,) = _JSON_LENGTH.unpack_from(payload)
    end = _JSON_LENGTH.size + length
    if end > len(payload):
        raise ValueError("request JSON runs past the payload")
    body = json.loads(payload[_JSON_LENGTH.size : end])
    if not isinstance(body, dict):
        raise ValueError("request JSON is not an object")
    return body, payload[end:]


async def read_frame(reader) -> Frame:
    """The next frame from an asyncio StreamReader (IncompleteReadError at EOF)."""
    kind, request_id, length = HEADER.unpack(await reader.readexactly(HEADER.size))
    if length > MAX_PAYLOAD:
        raise ValueError(f"speech pool frame of {length} bytes")
    payload = await reader.readexactly(length) if length else b""
    return Frame(kind, request_id, payload)
