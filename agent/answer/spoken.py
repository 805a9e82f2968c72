"""What of an answer was actually played: the words the history keeps after a barge-in."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass
class SpokenPhrase:
    """A phrase of the agent's answer and how much of its audio has been queued and played."""

    text: str
    queued: int = 0
    played: int = 0
    complete: bool = False  # all of its audio has been synthesised

    def spoken_text(self) -> str:
        if self.complete and self.queued and self.played >= self.queued:
            return self.text
        if not self.queued or not self.played:
            return ""
        words = self.text.split()
        n = int(len(words) * min(1.0, self.played / self.queued))
        return " ".join(words[:n])


class SpokenText:
    """The answer's phrases, the audio queued for each and how much of it was played."""

    def __init__(self) -> None:
        self.phrases: list[SpokenPhrase] = []
        self.pending_segments = 0  # queued segments not yet played out (or flushed)
        self.playback_done = asyncio.Event()

    def add(self, text: str) -> SpokenPhrase:
        phrase = SpokenPhrase(text)
        self.phrases.append(phrase)
        return phrase

    def queued(self, phrase: SpokenPhrase, samples: int) -> None:
        """`samples` more of `phrase`'s audio are on their way to the playout queue."""
        phrase.queued += samples
        self.pending_segments += 1
        self.playback_done.clear()

    def played(self, phrase: SpokenPhrase, samples: int) -> None:
        """One of `phrase`'s segments left the queue, `samples` of it played (fewer when flushed)."""
        phrase.played += samples
        self.pending_segments -= 1
        if self.pending_segments == 0:
            self.playback_done.set()

    def text(self) -> str:
        """The words of the answer that were actually played."""
        return " ".join(t for t in (p.spoken_text() for p in self.phrases) if t)
