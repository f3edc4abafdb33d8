"""The Piper child process: loads a voice once and synthesizes requests in order.

piper-tts is GPL-3.0 (it embeds espeak-ng), so it is never imported into the
Django process. :class:`mediastream.tts.piper.PiperBackend` runs this file as
a separate program (``python piper_worker.py --model M --config C``) and
talks to it over pipes. The file imports nothing from ``mediastream``.

Protocol. Requests come on stdin, one JSON object per line::

    {"op": "synthesize", "id": 7, "text": "Hello.", "length_scale": null}
    {"op": "cancel", "id": 7}

Replies go to stdout as frames: a 9-byte header ``>cII`` (kind, request id,
payload length) then the payload. Kinds: ``R`` ready (id 0, JSON
``{"sample_rate": ...}``, sent once after the model loaded), ``A`` one
sentence of PCM16 LE audio, ``E`` end of a request (JSON ``{"cancelled":
bool}``), ``X`` the request failed (JSON ``{"message": ...}``; no ``E``
follows). Requests run one at a time in arrival order; a cancel stops its
request at the next sentence boundary. EOF on stdin ends the process.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import struct
import sys
import threading
from typing import BinaryIO

HEADER = struct.Struct(">cII")
READY, AUDIO, END, ERROR = b"R", b"A", b"E", b"X"

logger = logging.getLogger("mediastream.tts.piper_worker")


class FrameWriter:
    """Writes protocol frames to the private stdout handle, one flush per frame."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def send(self, kind: bytes, request_id: int, payload: bytes = b"") -> None:
        self._stream.write(HEADER.pack(kind, request_id, len(payload)) + payload)
        self._stream.flush()

    def send_json(self, kind: bytes, request_id: int, body: dict) -> None:
        self.send(kind, request_id, json.dumps(body).encode())


def _read_requests(requests: queue.Queue, cancelled: set[int]) -> None:
    """stdin reader thread: cancels take effect at once, requests queue up in order."""
    for line in sys.stdin.buffer:
        try:
            message = json.loads(line)
            request_id = int(message["id"])
        except (ValueError, KeyError, TypeError):
            logger.warning("Ignoring a malformed request line: %r", line[:200])
            continue
        if message.get("op") == "cancel":
            cancelled.add(request_id)
        else:
            requests.put(message)
    requests.put(None)


def serve(voice, writer: FrameWriter) -> None:
    from piper import SynthesisConfig

    requests: queue.Queue = queue.Queue()
    cancelled: set[int] = set()
    threading.Thread(target=_read_requests, args=(requests, cancelled), daemon=True).start()
    while (message := requests.get()) is not None:
        request_id = int(message["id"])
        # Cancels for requests already finished are stale; ids only grow.
        cancelled.difference_update([i for i in list(cancelled) if i < request_id])
        if request_id in cancelled:
            writer.send_json(END, request_id, {"cancelled": True})
            continue
        try:
            config = SynthesisConfig(length_scale=message.get("length_scale"))
            for chunk in voice.synthesize(str(message.get("text", "")), syn_config=config):
                if request_id in cancelled:
                    break
                writer.send(AUDIO, request_id, chunk.audio_int16_bytes)
        except Exception as exc:  # report, keep serving the next request
            logger.exception("Synthesis failed")
            writer.send_json(ERROR, request_id, {"message": f"{type(exc).__name__}: {exc}"[:300]})
            continue
        writer.send_json(END, request_id, {"cancelled": request_id in cancelled})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="piper-worker: %(message)s")

    # The protocol owns the real stdout; anything a library prints goes to stderr.
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    writer = FrameWriter(protocol_out)

    from piper import PiperVoice

    voice = PiperVoice.load(args.model, config_path=args.config)
    writer.send_json(READY, 0, {"sample_rate": voice.config.sample_rate})
    try:
        serve(voice, writer)
    except BrokenPipeError:  # the parent went away
        return 0
    return 0


if __name__ == "__main__":
    # Run as a script from mediastream/tts/, whose piper.py would shadow piper-tts.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    sys.exit(main())
