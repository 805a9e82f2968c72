"""Has the user finished, or only paused? The end-of-turn model's verdict and the transcript rule.

At each pause the arbiter asks the end-of-turn model (Smart Turn) about the utterance so far;
the turn detector holds the end of the turn until it answers (or `turns.incomplete_silence_ms`
passes). A verdict of "incomplete" is overruled when the preemptive answer's transcript of the
same pause ends a sentence on a word that can end one (`turns.finished_text_ends_turn`). Over the
agent's answer (an interruption being judged) its words decide, at once: no waiting. A model
that fails fails open: silence decides, as without the model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Callable, Coroutine

import numpy as np

from agent.config import TurnsConfig
from agent.events import EndOfTurnVerdict, Event
from agent.pipeline.end_of_turn import SmartTurn, Verdict
from agent.pipeline.transcripts import sounds_finished
from agent.pipeline.turns import TurnDetector

log = logging.getLogger(__name__)


class EndOfTurnArbiter:
    def __init__(self, model: SmartTurn | None, detector: TurnDetector, config: TurnsConfig,
                 emit: Callable[[Event], None], run_first: Callable[[Coroutine, str], asyncio.Task],
                 label: str = "session") -> None:
        self.model = model  # None: silence alone decides
        self.detector = detector
        self.config = config
        self.emit = emit
        self.run_first = run_first  # runs the verdict ahead of other calls' model work
        self.label = label
        self.verdict: Verdict | None = None  # the latest verdict in this utterance
        self._heard: tuple[int, str] | None = None  # (pause id, what the preemptive answer heard)
        self._closed = False

    def reset(self) -> None:
        """The user (re)started speaking: an earlier verdict no longer holds."""
        self.verdict = None

    def take(self) -> Verdict | None:
        """The verdict that ended the turn (for its timeline), forgotten here."""
        verdict, self.verdict = self.verdict, None
        return verdict

    def ask(self, audio: np.ndarray, pause_id: int, over_agent: bool) -> None:
        """The user paused: is the utterance so far complete?"""
        if self.model is None:
            return
        if over_agent:
            self.detector.set_verdict(pause_id, True)
            return
        future = self.run_first(self.model.verdict(audio), "end of turn")

        def done(f: asyncio.Future) -> None:
            if self._closed or f.cancelled():
                return
            if f.exception() is not None:
                log.warning("%s: end-of-turn model failed: %s", self.label, f.exception())
                self.detector.set_verdict(pause_id, True)
                return
            verdict = f.result()
            self.verdict = verdict
            self.detector.set_verdict(pause_id, verdict.complete)
            self.emit(EndOfTurnVerdict(verdict.complete, verdict.probability, verdict.ms))
            self._finish_by_transcript(pause_id)

        future.add_done_callback(done)

    def heard(self, pause_id: int, text: str) -> None:
        """The preemptive answer started at pause `pause_id` transcribed `text`."""
        self._heard = (pause_id, text)
        self._finish_by_transcript(pause_id)

    def _finish_by_transcript(self, pause_id: int) -> None:
        """The model doubts the utterance is finished, but its transcript ends a sentence on a word
        that can end one: let the hangover end the turn."""
        verdict, said = self.verdict, self._heard
        if (not self.config.finished_text_ends_turn or verdict is None or verdict.complete
                or said is None or said[0] != pause_id or not sounds_finished(said[1])):
            return
        self.verdict = dataclasses.replace(verdict, complete=True)
        self.detector.set_verdict(pause_id, True)
        self.emit(EndOfTurnVerdict(True, verdict.probability, verdict.ms, source="transcript"))

    def close(self) -> None:
        self._closed = True
