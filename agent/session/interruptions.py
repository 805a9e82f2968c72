"""Sound over the agent's answer: words that stop it, or a cough / "mm-hmm" it goes on after?

With `turns.forgive_interruptions`, user speech during an answer first only pauses playout
(`pause`: the next outbound frame is silence, nothing is lost). When the sound ends (`judge`),
a sound voiced for less than `turns.interrupt_min_ms` resumes the answer at once; otherwise its
transcript decides (the answer stays paused meanwhile): only fillers or noise resume it, words
confirm the interruption and are answered (`on_words`). A brain that cannot transcribe first
takes the sound as words.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Callable, Coroutine

import numpy as np

from agent.config import TurnsConfig
from agent.events import Event, Interruption
from agent.pipeline.pcm_queue import PcmQueue
from agent.pipeline.transcripts import is_only_filler, words_of
from agent.pipeline.turns import UserTurnEnded

if TYPE_CHECKING:
    from agent.answer import Answer


class InterruptionJudge:
    def __init__(self, config: TurnsConfig, output: PcmQueue, emit: Callable[[Event], None],
                 transcribe: Callable[[np.ndarray], Coroutine], run_due_now: Callable[[Coroutine, str], asyncio.Task],
                 on_words: Callable[[UserTurnEnded], None]) -> None:
        self.config = config
        self.output = output
        self.emit = emit
        self.transcribe = transcribe  # the conversation's: what was said, without answering it
        self.run_due_now = run_due_now
        self.on_words = on_words  # the interruption is confirmed: answer what was said
        self.paused: Answer | None = None  # the answer paused by a sound over it, not yet judged
        self._judging: asyncio.Task | None = None  # the transcription of that sound, which decides
        self._closed = False

    @property
    def pending(self) -> bool:
        return self.paused is not None

    def pause(self, answer: Answer) -> None:
        self.paused = answer
        self.output.paused = True  # the next outbound frame is silence; nothing is lost

    def judge(self, event: UserTurnEnded) -> None:
        """The sound over the agent ended: decide whether it interrupts."""
        if event.voiced_ms < self.config.interrupt_min_ms:
            self.resume("too short")
            return
        judging = self.run_due_now(self.transcribe(event.audio), "judging a sound")
        self._judging = judging

        def judged(f: asyncio.Future) -> None:
            if self._judging is not f or self._closed or f.cancelled():
                return
            self._judging = None
            text = None if f.exception() is not None else f.result()
            if text is not None and is_only_filler(text, self.config.fillers):
                self.resume("backchannel" if words_of(text) else "noise", text)
                return
            paused, self.paused = self.paused, None
            if paused is not None:
                self.emit(Interruption(paused.number, "confirmed", heard=text or ""))
            self.on_words(event)

        judging.add_done_callback(judged)

    def resume(self, reason: str, heard: str = "") -> None:
        """Not an interruption after all: the answer goes on from where it paused."""
        paused, self.paused = self.paused, None
        self.output.paused = False
        if paused is not None:
            self.emit(Interruption(paused.number, "resumed", reason, heard))

    def clear(self) -> None:
        """The paused answer is stopped (barge-in): playout goes on, with whatever comes next."""
        self.paused = None
        self.output.paused = False

    def close(self) -> None:
        self._closed = True
        if self._judging is not None:
            self._judging.cancel()
            self._judging = None
