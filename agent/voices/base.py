"""The voice interface: a phrase of text in, streamed PCM out.

A `Voice` is loaded once and shared; `speak(text)` is an async iterator of int16 mono chunks at
`sample_rate`, cancelled by closing it. Each voice module (`agent/voices/<name>.py`) also
exposes `KIND`, a `VoiceKind` naming its model files and how to load it; the registry in
`agent/voices/__init__.py` maps config names to those modules.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import AsyncIterator

import numpy as np

from agent.pipeline.audio import StreamResampler, trim_silence
from agent.runtime.choice import Kind


class Voice(ABC):
    name: str
    sample_rate: int

    @abstractmethod
    def speak(self, text: str) -> AsyncIterator[np.ndarray]:
        """Synthesise `text`, yielding int16 mono PCM chunks as they are ready."""

    async def warm_up(self) -> None:
        """Run the model once so the first real phrase is not slower than the rest."""

    def close(self) -> None:
        """Release model threads."""


VoiceKind = Kind[Voice]  # how a voice is chosen and loaded (each voice module's `KIND`)


async def render(voice: Voice, text: str, rate: int, trim: bool = True) -> np.ndarray:
    """Speak `text` with `voice` into one int16 mono array at `rate` (e.g. a test question)."""
    resampler = StreamResampler(rate)
    parts = [resampler.samples(chunk, voice.sample_rate) async for chunk in voice.speak(text)]
    parts.append(resampler.finish())
    audio = np.concatenate(parts)
    return trim_silence(audio, rate) if trim else audio
