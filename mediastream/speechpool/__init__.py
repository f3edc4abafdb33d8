"""The per-host speech pool: one process holds Whisper and Piper for every daphne process of the host.

N daphne processes that each load Whisper (and start a Piper worker) hold the
models N times. ``manage.py speech_pool`` loads them once and serves them over a
Unix socket (:mod:`.protocol`); ``WhisperBackend(POOL=path)`` and
``PiperBackend(POOL=path)`` send their heavy work there (:mod:`.client`) and keep
the cheap per-frame work (VAD, utterance cutting, pacing) in the stream's process.
"""
