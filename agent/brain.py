"""The brain interface: a user utterance (audio) in, the agent's answer out as streamed text.

A `Brain` holds the loaded models and is shared by all sessions; each session opens its own
`Conversation`, which keeps that session's bounded history. `reply()` is an async iterator of
text pieces and is cancelled by closing it (the session cancels the task that iterates it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import AsyncIterator, Callable

import numpy as np

TranscriptCallback = Callable[[str], None]


class Conversation(ABC):
    @abstractmethod
    def reply(self, audio: np.ndarray, on_transcript: TranscriptCallback) -> AsyncIterator[str]:
        """Answer one user utterance (int16, 16 kHz mono), streaming text pieces.

        Calls `on_transcript(text)` once with what the user said, as soon as it is known
        (before the first piece for a cascade; possibly later for a speech-LLM)."""

    def prefetch(self, audio: np.ndarray) -> None:
        """The user paused: start work on `audio` early (e.g. transcription). If the next
        reply() gets the same audio, it reuses the result; otherwise it is discarded."""

    @abstractmethod
    def record_agent_reply(self, spoken_text: str) -> None:
        """Store what the agent actually said (only the part that was played) in the history."""


class Brain(ABC):
    name: str

    @abstractmethod
    def new_conversation(self) -> Conversation: ...

    async def warm_up(self) -> None:
        """Run the models once so the first real turn is not slower than the rest."""

    def close(self) -> None:
        """Release model threads."""
