"""The brain interface: a user utterance (audio) in, the agent's answer out as streamed text.

Each brain module (`agent/brains/<name>.py`) also exposes `KIND`, a `BrainKind` that says which
model files it needs, whether it can run here (for `brain.kind = auto`) and how to load it; the
registry in `agent/brains/__init__.py` maps config names to those modules.

A `Brain` holds the loaded models and is shared by all sessions; each session opens its own
`Conversation`, which keeps that session's bounded history. `reply()` is an async iterator of
text pieces and is cancelled by closing it (the session cancels the task that iterates it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import AsyncIterator, Callable

import numpy as np

from agent.runtime.choice import Kind

# Called with what the user said; returning False means "do not answer it" (only fillers or
# noise): the brain then stops without answering and keeps nothing of the turn.
TranscriptCallback = Callable[[str], bool | None]


class Conversation(ABC):
    @abstractmethod
    def reply(self, audio: np.ndarray, on_transcript: TranscriptCallback) -> AsyncIterator[str]:
        """Answer one user utterance (int16, 16 kHz mono), streaming text pieces.

        Calls `on_transcript(text)` once with what the user said, as soon as it is known
        (before the first piece for a cascade; possibly later for a speech-LLM). If it returns
        False before any piece, the reply ends there and the utterance is not kept."""

    async def transcribe(self, audio: np.ndarray) -> str | None:
        """What the user said in `audio`, without answering it (to judge a sound made over the
        agent). None: this brain cannot tell before it answers."""
        return None

    @abstractmethod
    def record_agent_reply(self, spoken_text: str) -> None:
        """Store what the agent actually said (only the part that was played) in the history."""

    @abstractmethod
    def rollback(self) -> None:
        """Forget the reply in progress as if it had never been asked (a preemptive answer the
        user talked over). A no-op once `record_agent_reply` has stored it."""


class Brain(ABC):
    name: str

    @abstractmethod
    def new_conversation(self) -> Conversation: ...

    async def warm_up(self) -> None:
        """Run the models once so the first real turn is not slower than the rest."""

    def capacity(self) -> int | None:
        """Calls this brain holds at once within the latency budget (admission's default), or None
        when it sets no limit of its own (e.g. a remote engine that scales elsewhere)."""
        return None

    def load_times(self) -> dict[str, float]:
        """Seconds each model took to load, by model name (for /metrics)."""
        load_s = getattr(self, "load_s", None)
        return {"brain": float(load_s)} if isinstance(load_s, (int, float)) else {}

    def close(self) -> None:
        """Release model threads."""


BrainKind = Kind[Brain]  # how a brain is chosen and loaded (each brain module's `KIND`)
