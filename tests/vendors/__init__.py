"""Local stand-ins for TTS vendors' HTTP APIs, for tests, benchmarks and the simulator.

Each is an async context manager serving the vendor's documented endpoint on
127.0.0.1 (a free port), streaming chunked audio and recording every request::

    async with FakeOpenAISpeech(api_key="sk-test") as server:
        backend = OpenAIBackend(API_KEY="sk-test", BASE_URL=server.base_url)
        ...
        assert server.requests[0].json["response_format"] == "pcm"
"""

from .elevenlabs import FakeElevenLabsTTS
from .openai_speech import FakeOpenAISpeech
from .server import FakeVendorServer, RecordedRequest, tone_pcm

__all__ = ["FakeElevenLabsTTS", "FakeOpenAISpeech", "FakeVendorServer", "RecordedRequest", "tone_pcm"]
