"""Where an answer's events and audio go: straight on, or held back while it is preemptive.

A preemptive answer (started at a pause, before the end of the user's turn is certain) works as
usual but keeps what it would send (events, audio for the playout queue) to itself until
`confirm()` (the turn really ended) sends it all on at once. Thrown away instead, it leaves
nothing behind: nothing was played or shown. `confirmed` is also what its tool rounds wait for.
"""

from __future__ import annotations

import asyncio
from typing import Callable

import numpy as np

from agent.events import Event
from agent.pipeline.pcm_queue import PcmQueue, QueueFull, Segment

OnStart = Callable[[Segment], None]
OnDone = Callable[[Segment, int], None]


class PreemptiveHold:
    def __init__(self, emit: Callable[[Event], None], output: PcmQueue, preemptive: bool) -> None:
        self._emit = emit
        self.output = output
        self.confirmed = asyncio.Event()
        if not preemptive:
            self.confirmed.set()
        self._events: list[Event] = []
        self._audio: list[tuple[np.ndarray, str, OnStart, OnDone]] = []
        self.held_samples = 0

    @property
    def holding(self) -> bool:
        return not self.confirmed.is_set()

    def emit(self, event: Event) -> None:
        if self.holding:
            self._events.append(event)
        else:
            self._emit(event)

    def push(self, samples: np.ndarray, tag: str, on_start: OnStart, on_done: OnDone) -> None:
        """Audio for the playout queue (kept back while holding)."""
        if self.holding:
            self._audio.append((samples, tag, on_start, on_done))
            self.held_samples += len(samples)
        else:
            self._push(samples, tag, on_start, on_done)

    def queued_samples(self) -> int:
        """Audio made but not yet played (held, or in the output queue)."""
        return self.held_samples + self.output.queued_samples

    def confirm(self) -> None:
        """The user's turn really ended: send what was held, and go on live."""
        if not self.holding:
            return
        self.confirmed.set()
        events, self._events = self._events, []
        for event in events:
            self._emit(event)
        audio, self._audio = self._audio, []
        self.held_samples = 0
        for samples, tag, on_start, on_done in audio:
            self._push(samples, tag, on_start, on_done)

    def _push(self, samples: np.ndarray, tag: str, on_start: OnStart, on_done: OnDone) -> None:
        try:
            self.output.push(samples, tag=tag, on_start=on_start, on_done=on_done)
        except QueueFull as exc:
            raise RuntimeError(f"playout queue full: {exc}") from exc
