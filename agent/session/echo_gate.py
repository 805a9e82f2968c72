"""Is the speech now heard the agent's own voice coming back (a loudspeaker)?

It is while it stays `turns.echo_margin_db` quieter than what the agent played in the last 0.5 s
(checked at its start, and again with every chunk while it lasts). An utterance taken for echo
interrupts nothing and is not answered; one that begins as quiet as an echo (a soft onset) but
grows louder than one is the user after all.
"""

from __future__ import annotations

import collections

import numpy as np

from agent.pipeline.audio import rms_dbfs
from agent.pipeline.pcm_queue import PcmQueue


class EchoGate:
    def __init__(self, margin_db: float, output: PcmQueue) -> None:
        self.margin_db = margin_db
        self.output = output  # what the agent plays: its recent levels
        self._heard_levels: collections.deque[float] = collections.deque(maxlen=8)  # dBFS of recent input chunks
        self.active = False  # the utterance in progress is taken for the agent's own voice

    def heard(self, pcm: np.ndarray) -> None:
        """A chunk of the user's audio arrived."""
        if len(pcm):
            self._heard_levels.append(rms_dbfs(pcm))

    def is_echo(self) -> bool:
        if self.margin_db <= 0 or not self.output.recent_levels or not self._heard_levels:
            return False
        return max(self._heard_levels) < max(self.output.recent_levels) - self.margin_db

    def speech_started(self) -> bool:
        """Speech began over the agent's answer: is it the echo? (then the gate holds it)"""
        self.active = self.is_echo()
        return self.active

    def grew_louder(self) -> bool:
        """While holding an utterance: has it become louder than an echo? (then it lets it through)"""
        if self.active and not self.is_echo():
            self.active = False
            return True
        return False

    def ended(self) -> None:
        """The echo ended: nothing to answer, nothing interrupted."""
        self.active = False
