"""Preemptive answers: at a short pause (`turns.speculative_ms`) the whole answer to what was said
so far already starts, held back (see `agent.answer.preemptive_hold`). When the turn then ends
with the same audio the session confirms it at once: its transcript, first token and first audio
are often ready by then. If the user goes on speaking it is discarded: cancelled, the
conversation rolled back; nothing played, nothing shown, nothing in the history.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from agent.brains.base import Conversation
from agent.events import Event, PreemptionDiscarded

if TYPE_CHECKING:
    from agent.answer import Answer


class Preemption:
    def __init__(self, conversation: Conversation, emit: Callable[[Event], None], clock: Callable[[], float]) -> None:
        self.conversation = conversation
        self.emit = emit
        self.clock = clock
        self._pending: tuple[np.ndarray, Answer] | None = None  # (the audio it answers, the preemptive answer)
        self.counts = {"started": 0, "hits": 0, "discarded": 0}
        self.wasted_s = 0.0  # time discarded answers had been working

    @property
    def answer(self) -> Answer | None:
        return self._pending[1] if self._pending is not None else None

    def start(self, audio: np.ndarray, answer: Answer) -> None:
        """`answer` (preemptive) answers `audio`, the utterance up to the pause."""
        assert self._pending is None, "discard() the last preemptive answer first"
        self.counts["started"] += 1
        self._pending = (audio, answer)

    def matches(self, audio: np.ndarray) -> bool:
        """Did the turn end with exactly the audio the preemptive answer answers?"""
        return self._pending is not None and np.array_equal(self._pending[0], audio)

    def take(self) -> Answer:
        """The turn ended as the preemptive answer assumed: it becomes the answer."""
        assert self._pending is not None
        _audio, answer = self._pending
        self._pending = None
        self.counts["hits"] += 1
        return answer

    def discard(self) -> None:
        """The user went on speaking: throw the preemptive answer away, unheard and unrecorded."""
        if self._pending is None:
            return
        _audio, answer = self._pending
        self._pending = None
        answer.cancel()
        self.conversation.rollback()
        ran_s = self.clock() - answer.started_at
        self.counts["discarded"] += 1
        self.wasted_s += ran_s
        self.emit(PreemptionDiscarded(round(ran_s * 1000.0, 1)))

    def close(self) -> None:
        if self._pending is not None:
            self._pending[1].cancel()
            self._pending = None
