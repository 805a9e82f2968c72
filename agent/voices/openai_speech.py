"""The remote voice: any server implementing the OpenAI-compatible `POST /v1/audio/speech`
(Kokoro-FastAPI, vLLM-Omni, OpenAI itself) speaks each phrase, streamed as raw PCM
(`response_format: "pcm"`: 16-bit little-endian mono, 24 kHz as OpenAI defines it;
`openai_voice.sample_rate` for a server that sends another rate).

Chunks are passed on as they arrive (an odd trailing byte waits for its pair). Closing the
stream (barge-in) closes the HTTP connection, so the server stops synthesising. Failures are
`EngineError`s with a clear message, never the API key; the session turns them into an `error`
event and goes on.
"""

from __future__ import annotations

import contextlib
import logging
from typing import AsyncIterator

import numpy as np

from agent.config import Config, OpenAIVoiceConfig
from agent.runtime.openai_api import OpenAIClient, api_key_from_env

from .base import Voice, VoiceKind

log = logging.getLogger(__name__)


class OpenAISpeechVoice(Voice):
    name = "openai"

    def __init__(self, client: OpenAIClient, settings: OpenAIVoiceConfig, speed: float) -> None:
        self.client = client
        self.settings = settings
        self.speed = speed
        self.sample_rate = settings.sample_rate

    def request(self, text: str) -> dict:
        body: dict = {"input": text, "voice": self.settings.voice, "response_format": "pcm", "speed": self.speed}
        if self.settings.model:
            body["model"] = self.settings.model
        return body

    async def speak(self, text: str) -> AsyncIterator[np.ndarray]:
        carry = b""  # a byte of a sample split between two chunks
        async with contextlib.aclosing(self.client.speech(self.request(text))) as chunks:
            async for chunk in chunks:
                data = carry + chunk
                usable = len(data) - len(data) % 2
                carry = data[usable:]
                if usable:
                    yield np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)

    async def warm_up(self) -> None:
        try:
            async with contextlib.aclosing(self.speak("Hello.")) as chunks:
                async for _ in chunks:
                    pass
        except Exception as exc:  # noqa: BLE001 - start-up goes on; each phrase tries again
            log.warning("openai voice: the speech server at %s did not answer the warm-up: %s",
                        self.client.shown_url, exc)

    def close(self) -> None:
        self.client.close()


def load(config: Config, _paths) -> OpenAISpeechVoice:
    settings = config.openai_voice
    api_key = api_key_from_env(settings.api_key_env, "openai_voice.api_key_env")
    client = OpenAIClient(settings.base_url, api_key, settings.connect_timeout_s, settings.read_timeout_s,
                          what="speech server")
    log.info("openai voice: speech server %s, model %s, voice %s, %d Hz, API key %s", client.shown_url,
             settings.model or "(the server's)", settings.voice, settings.sample_rate,
             f"from ${settings.api_key_env}" if api_key else "none")
    return OpenAISpeechVoice(client, settings, config.voice.speed)


KIND = VoiceKind(
    name="openai",
    model_files=lambda _config: (),
    load=load,
    # Never picked by voice.kind = auto: it needs a speech server somebody configured.
    unavailable=lambda _config: "openai is chosen only by name (voice.kind = openai, with openai_voice.base_url)",
)
