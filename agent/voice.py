"""The voice interface: a phrase of text in, streamed PCM out.

A `Voice` is loaded once and shared; `speak(text)` is an async iterator of int16 mono chunks at
`sample_rate`, cancelled by closing it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import AsyncIterator

import numpy as np


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
