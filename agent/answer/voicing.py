"""The answer's voice half: each phrase synthesised in turn, its audio queued for playout."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Callable

import numpy as np

from agent.events import AgentText
from agent.pipeline.audio import StreamResampler
from agent.pipeline.pcm_queue import SAMPLE_RATE as PLAYOUT_RATE, Segment
from agent.pipeline.timeline import TurnTimeline
from agent.runtime.scheduler import Urgency
from agent.voices.base import Voice

from .preemptive_hold import PreemptiveHold
from .spoken import SpokenPhrase, SpokenText
from .stall_guard import stall_guard

log = logging.getLogger(__name__)


class PhraseVoicer:
    """Takes phrases (`say`), voices them one after another and queues their audio through the
    answer's hold. Until the first phrase has audio, `say` does not return: the text half reads
    no more text, so the brain pauses (backpressure) and the voice has the CPU for that phrase."""

    def __init__(self, number: int, voice: Voice, hold: PreemptiveHold, timeline: TurnTimeline,
                 stall_timeout_s: float, urgency: Urgency, clock: Callable[[], float],
                 on_audible: Callable[[], None]) -> None:
        self.number = number
        self.voice = voice
        self.hold = hold
        self.timeline = timeline
        self.stall_timeout_s = stall_timeout_s
        self.urgency = urgency
        self.clock = clock
        self.on_audible = on_audible  # the first frame of the answer is being played
        self.spoken = SpokenText()
        self.synthesizing = False
        self._phrases: asyncio.Queue[str | None] = asyncio.Queue()
        self._first_audio = asyncio.Event()

    async def say(self, phrase: str) -> None:
        """Queue `phrase` to be voiced (returns once the answer's first phrase has audio)."""
        self.timeline.mark("first_phrase", self.clock())
        await self._phrases.put(phrase)
        await self._first_audio.wait()

    async def end(self) -> None:
        """No more phrases: `run()` returns once the last one is voiced."""
        await self._phrases.put(None)

    def hungry(self, ahead_samples: int) -> bool:
        """Nothing left to synthesise and less than `ahead_samples` of audio queued."""
        return self._phrases.empty() and not self.synthesizing and self.hold.queued_samples() < ahead_samples

    async def run(self) -> None:
        upsampler = StreamResampler(PLAYOUT_RATE)
        phrases = self.spoken.phrases
        try:
            while (text := await self._phrases.get()) is not None:
                phrase = self.spoken.add(text)
                started = self.clock()
                self.synthesizing = True
                speech = stall_guard(self.voice.speak(text), self.stall_timeout_s, "voice", self.urgency)
                async with contextlib.aclosing(speech) as chunks:
                    async for chunk in chunks:
                        self.timeline.mark("first_pcm", self.clock())
                        self._queue_audio(phrase, upsampler.samples(chunk, self.voice.sample_rate))
                        self._first_audio.set()
                self.synthesizing = False
                phrase.complete = True
                self._first_audio.set()
                log.debug("turn %s: voiced %r (%.0f ms of audio) in %.0f ms", self.number, text,
                          phrase.queued * 1000 / PLAYOUT_RATE, (self.clock() - started) * 1000)
            if phrases:
                self._queue_audio(phrases[-1], upsampler.finish())
        finally:
            self._first_audio.set()

    def _queue_audio(self, phrase: SpokenPhrase, samples: np.ndarray) -> None:
        if len(samples) == 0:
            return
        first_segment = phrase.queued == 0

        def on_start(_segment: Segment) -> None:
            if self.timeline.mark("first_frame", self.clock()):
                self.on_audible()
            if first_segment:
                self.hold.emit(AgentText(self.number, phrase.text))

        def on_done(_segment: Segment, played: int) -> None:
            self.spoken.played(phrase, played)

        self.spoken.queued(phrase, len(samples))
        self.hold.push(samples, phrase.text, on_start, on_done)
