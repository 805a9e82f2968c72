"""The agent's answer to one user turn: brain pieces -> phrases -> voice -> the playout queue.

An `Answer` is a handle over its parts, which run as two concurrent halves:
- `PhraseProducer` (the text half) reads the brain's reply round by round, cuts it into phrases,
  and runs the tools the model asks for between rounds (`ToolRounds`);
- `PhraseVoicer` (the voice half) synthesises the phrases in turn and queues their audio, and
  its `SpokenText` counts how much of each phrase was actually played, so the history holds only
  what the user heard;
- `PreemptiveHold` passes the answer's events and audio on, or holds them back while the answer
  is preemptive (started at a pause before the end of the user's turn is certain) until
  `confirm()`; cancelled instead, it leaves nothing behind.
Cancelling its task (barge-in, close) stops the brain, the tools and the voice at their next item.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Callable

import numpy as np

from agent.brains.base import Conversation
from agent.config import Config
from agent.events import Event
from agent.pipeline.pcm_queue import SAMPLE_RATE as PLAYOUT_RATE, PcmQueue
from agent.pipeline.timeline import TurnTimeline
from agent.runtime.scheduler import Urgency
from agent.tools.toolbox import ToolBox
from agent.voices.base import Voice

from .phrase_producer import PhraseProducer
from .preemptive_hold import PreemptiveHold
from .tool_rounds import ToolRounds
from .voicing import PhraseVoicer


CUT_NOT_NEEDED = ".!?…"  # an interrupted answer that ended on one of these ended its sentence


class Answer:
    def __init__(self, number: int, conversation: Conversation, voice: Voice, output: PcmQueue, config: Config,
                 emit: Callable[[Event], None], on_audible: Callable[[], None],
                 clock: Callable[[], float] = time.perf_counter, preemptive: bool = False,
                 on_transcript: Callable[[str], None] | None = None, tools: ToolBox | None = None) -> None:
        self.timeline = TurnTimeline(number)
        self.timeline.preemptive = preemptive
        self.config = config
        self.clock = clock
        self.started_at = clock()
        self.task: asyncio.Task | None = None
        self.urgency = Urgency(self.deadline, f"turn {number}")  # its model work's place in the queue
        self.hold = PreemptiveHold(emit, output, preemptive)
        self.voicer = PhraseVoicer(number, voice, self.hold, self.timeline, config.brain.stall_timeout_s,
                                   self.urgency, clock, on_audible)
        self.tool_rounds = ToolRounds(number, tools, self.timeline, self.hold.emit, self.hold.confirmed, clock)
        self.producer = PhraseProducer(conversation, config, self.timeline, self.voicer, self.tool_rounds,
                                       self.hold.emit, self.urgency, clock, on_transcript)

    @property
    def number(self) -> int:
        return self.timeline.turn

    @property
    def confirmed(self) -> bool:
        """False while a preemptive answer waits for the user's turn to end."""
        return not self.hold.holding

    def emit(self, event: Event) -> None:
        self.hold.emit(event)

    def confirm(self) -> None:
        """The user's turn really ended: a preemptive answer sends what it held, and goes on live."""
        self.hold.confirm()

    def deadline(self) -> float:
        """When this answer's next model step is due (the scheduler serves the earliest first).

        Before any audio is queued: the end of the user's turn (a preemptive answer: when the turn
        would end) plus `scheduler.first_audio_budget_s`, the wait for a first word a caller
        accepts. Once audio is queued: `scheduler.refill_lead_s` before it runs out, so the next
        phrase is ready in time. A caller whose answer is playing therefore goes before one still
        within the first-word budget only when the playing one would otherwise fall silent, and a
        caller past that budget goes before anyone with more than the lead queued."""
        scheduler = self.config.scheduler
        marks = self.timeline.marks
        start = marks.get("turn_end")
        if start is None:
            start = marks.get("speech_end", self.started_at) + self.config.turns.hangover_ms / 1000.0
        queued_s = self.queued_samples() / PLAYOUT_RATE
        if queued_s == 0:
            return start + scheduler.first_audio_budget_s
        return max(self.clock(), start) + queued_s - scheduler.refill_lead_s

    def queued_samples(self) -> int:
        """Audio made but not yet played (held or in the output queue)."""
        return self.hold.queued_samples()

    def spoken_text(self) -> str:
        """The words of the answer that were actually played."""
        return self.voicer.spoken.text()

    def recorded_text(self) -> str:
        """What the conversation keeps of the answer: the words played, with "…" where the user cut
        it off inside a sentence. Shown only "I" as its last reply (a first phrase, then the caller
        went on), the 1.5B model answered "Keep that in mind, please." with "I" 2 times of 3,
        against 0 of 3 shown "I…" (the real-shaped call's two-sentence turn, 2026-12-06)."""
        spoken = self.spoken_text().rstrip()
        if spoken and self.timeline.outcome == "interrupted" and spoken[-1] not in CUT_NOT_NEEDED:
            return spoken + "…"
        return spoken

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def play(self, audio: np.ndarray) -> None:
        """Answer `audio` (int16, 16 kHz) and return when the answer has been played."""
        producer = asyncio.create_task(self.producer.run(audio))
        try:
            await self.voicer.run()
            await producer  # re-raises a brain failure
        finally:
            if not producer.done():
                producer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await producer
        spoken = self.voicer.spoken
        if spoken.pending_segments:
            await spoken.playback_done.wait()
        if not spoken.phrases and self.timeline.outcome == "pending":
            self.timeline.outcome = "empty"
